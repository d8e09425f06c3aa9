"""int8 on CPU: ONNX Runtime's per-channel dynamic int8 against our fp32 and bf16, side by side.

    pip install --no-deps --target /tmp/ortpkgs onnxruntime onnx onnxscript onnx-ir ml_dtypes flatbuffers
    PYTHONPATH=/tmp/ortpkgs .venv/bin/python benchmarks/int8.py [--docs 600] [--max-tokens 128] [--rounds 3]

Issue 20: an int8 path is kept only at mean cosine >= 0.995, min >= 0.98 to our fp32 vectors on
real text and >= 1.5x our fp32 whole-process embed. This measures the part int8 can change, the
model, in one process on the same texts: Cranfield abstracts cut by the real chunker
(``--max-tokens``), embedded by our plugin at fp32 and at ``auto`` (bf16 autocast on a CPU with
avx512_bf16), and by ONNX Runtime sessions of the packaged all-MiniLM-L6-v2 exported here
(offline): fp32, dynamic int8 per channel (QInt8 weights, the configuration of sentence-transformers'
``export_dynamic_quantized_onnx_model(..., "avx512_vnni")``), and the same after ONNX Runtime's BERT
graph fusions. Sentence-transformers' ``backend="onnx"`` itself needs optimum-onnx, whose only
release pins transformers < 4.58 (we run 5.x), so the sessions are built with onnxruntime directly.
Rounds alternate the configurations; the best counts. Whole-process embed adds the same fixed
costs (start-up, reading, writing) to every configuration, so a model-only ratio below 1.5x rules
the target out.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "cranfield" / "corpus.jsonl"
sys.path.insert(0, str(ROOT / "benchmarks"))

from embed import read_docs  # noqa: E402


def chunk_texts(docs: list[dict], max_tokens: int) -> list[str]:
    from arrowsmith.commands.chunk import chunk_documents

    batch = pa.RecordBatch.from_pylist(docs)
    out = []
    for b in chunk_documents([batch], max_tokens=max_tokens):
        for row in b.to_pylist():
            out += [row["text"][c["start"]:c["end"]] for c in row["chunks"]]
    return out


def export_onnx(model_dir: str, out: Path) -> Path:
    import torch
    from transformers import AutoModel

    class Hidden(torch.nn.Module):  # positional inputs, one output: what the exporter traces
        def __init__(self):
            super().__init__()
            self.bert = AutoModel.from_pretrained(model_dir).eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    model = Hidden().eval()
    ids = torch.ones(2, 16, dtype=torch.long)
    path = out / "model.onnx"
    dyn = {0: "batch", 1: "seq"}
    with torch.no_grad():
        torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(path),
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "token_type_ids": dyn,
                                        "last_hidden_state": dyn})
    return path


def quantize(src: Path, dst: Path, keep_float: tuple[str, ...] = ()) -> Path:
    """Dynamic int8, per channel; MatMul nodes whose names end with one of ``keep_float`` stay fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    names = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == "MatMul"]
    # (the exported graph's shape inference leaves some MatMul outputs untyped: they are float)
    quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                     nodes_to_exclude=[n for n in names if n.endswith(keep_float)] if keep_float else None,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return dst


# the attention's two products of activations (scores = Q K^T, context = scores V): no weights
ACTIVATION_PRODUCTS = ("self/MatMul", "self/MatMul_1")
FFN_DOWN = tuple(f"layer.{i}/output/dense/MatMul" for i in range(12))  # GELU's wide-range input side


def fuse(src: Path, dst: Path) -> Path:
    from onnxruntime.transformers.optimizer import optimize_model

    optimize_model(str(src), model_type="bert", num_heads=12, hidden_size=384).save_model_to_file(str(dst))
    return dst


class OrtEncoder:
    """Mean-pooled, normalized sentence vectors from an ONNX BERT (what the ST pipeline computes)."""

    def __init__(self, path: Path, tokenizer_file: str, threads: int):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        opts = ort.SessionOptions()  # (graph optimizations: all, the default)
        # ORT counts physical cores by default; our torch runs on every CPU the machine has
        setattr(opts, "intra_op_num_threads", threads)  # noqa: B010 (a plain assignment reads as dead code)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.names = {i.name for i in self.session.get_inputs()}
        self.tok = Tokenizer.from_file(tokenizer_file)
        self.tok.enable_truncation(256)
        self.tok.no_padding()

    def encode(self, texts: list[str], batch: int = 32) -> np.ndarray:
        encs = self.tok.encode_batch(texts)
        order = np.argsort([len(e.ids) for e in encs], kind="stable")
        out = np.empty((len(texts), 384), np.float32)
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            width = max(len(encs[j].ids) for j in idx)
            ids = np.zeros((len(idx), width), np.int64)
            mask = np.zeros((len(idx), width), np.int64)
            for r, j in enumerate(idx):
                n = len(encs[j].ids)
                ids[r, :n], mask[r, :n] = encs[j].ids, 1
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            hidden = self.session.run(None, {k: v for k, v in feed.items() if k in self.names})[0]
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            out[idx] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    import onnxruntime
    import torch

    from arrowsmith.plugins.registry import load_model
    from arrowsmith.plugins.sentence_transformers import resolve_model_path

    texts = chunk_texts(read_docs(CORPUS, args.docs), args.max_tokens)
    model_dir = resolve_model_path("all-MiniLM-L6-v2")
    ours = {dtype: load_model("all-MiniLM-L6-v2", dtype=dtype) for dtype in ("fp32", "auto")}
    tmp = Path(tempfile.mkdtemp(prefix="int8-"))
    fp32_onnx = export_onnx(model_dir, tmp)
    fused = fuse(fp32_onnx, tmp / "fused.onnx")
    tok_file = str(Path(model_dir) / "tokenizer.json")

    def session(path: Path):
        return OrtEncoder(path, tok_file, args.threads).encode

    configs = {
        "ours fp32": ours["fp32"].encode,
        f"ours auto ({ours['auto'].dtype})": ours["auto"].encode,
        "ORT fp32": session(fp32_onnx),
        "ORT fp32, fused": session(fused),
        "ORT int8 per-channel, every MatMul (as sentence-transformers)":
            session(quantize(fp32_onnx, tmp / "a.onnx")),
        "ORT fused + int8 per-channel": session(quantize(fused, tmp / "b.onnx")),
        "ORT fused + int8, weights only": session(quantize(fused, tmp / "c.onnx", ACTIVATION_PRODUCTS)),
        "ORT fused + int8, weights only, FFN down fp32": session(quantize(fused, tmp / "d.onnx",
                                                                     ACTIVATION_PRODUCTS + FFN_DOWN)),
    }
    shutil.rmtree(tmp)  # (sessions hold their graphs in memory)
    tokens = sum(ours["fp32"].tokenizer.count_tokens(texts))
    flags = sorted({f for f in open("/proc/cpuinfo").read().split()
                    if f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8")})
    print(f"{len(texts):,} chunks of {args.docs} Cranfield abstracts (--max-tokens {args.max_tokens}); "
          f"python {platform.python_version()}, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, "
          f"{os.cpu_count()} CPUs ({' '.join(flags)}), threads {args.threads}, "
          f"load average {os.getloadavg()[0]:.1f}; {tokens:,} content tokens")
    for encode in configs.values():  # warm up: first-call allocations and kernel choices
        encode(texts[:64])
    best: dict[str, float] = {}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, encode in configs.items():
            t = time.perf_counter()
            vectors[name] = np.asarray(encode(texts), np.float32)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
    ref = vectors["ours fp32"]
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    print("\n| configuration | best s | chunks/s | x ours fp32 | cosine to ours fp32: mean | min |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in configs:
        v = vectors[name] / np.linalg.norm(vectors[name], axis=1, keepdims=True)
        cos = (v * ref).sum(1)
        print(f"| {name} | {best[name]:.2f} | {len(texts) / best[name]:.0f} | "
              f"{best['ours fp32'] / best[name]:.2f} | {cos.mean():.6f} | {cos.min():.6f} |")


if __name__ == "__main__":
    main()
