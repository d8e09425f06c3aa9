"""A lean BERT encoder in plain torch, for the sentence-transformers models that are only
``Transformer`` (a BERT) → ``Pooling`` (mean or CLS) → optionally ``Normalize`` (issue 12).

Why not ``SentenceTransformer``: importing sentence-transformers (and with it transformers,
scikit-learn and scipy) costs several seconds of CPU per process, more than `query` with one
text should take in all; this module needs only torch and safetensors. It also computes in the
precision we choose layer by layer: with ``dtype`` bf16/fp16 the matrix products (linear layers
and attention) run in half precision from weights cast once at load, while embeddings, the
residual stream and layer norms stay float32. That is what CPU autocast does, without casting
every weight again on every forward pass, and more accurate than casting the whole model
(docs/embed.md: min cosine 0.998 for half weights everywhere).

The arithmetic is BertModel's (absolute positions, post-layer-norm, token type 0), checked
against sentence-transformers in tests/test_embed.py. Anything else falls back to
sentence-transformers: see :func:`lean_config`.

:class:`NumpyBert` is the same forward pass in numpy, for `query` with a few texts: importing
torch alone costs more CPU than the 2 s issue 12 allows the whole process, and a dozen tokens
need ~0.3 GFLOP, which numpy does in milliseconds from the weights file mapped read-only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "relu": None}
HALF = {"bf16": "bfloat16", "fp16": "float16"}
# one encoder layer's weights in a BERT checkpoint, by the name both forward passes use; each is a
# (weight, bias) pair under "encoder.layer.<i>.<key>"
BERT_LAYER = {"q": "attention.self.query.", "k": "attention.self.key.", "v": "attention.self.value.",
              "out": "attention.output.dense.", "ln1": "attention.output.LayerNorm.",
              "up": "intermediate.dense.", "down": "output.dense.", "ln2": "output.LayerNorm."}
PARTS = ("weight", "bias")
QKV = ("q", "k", "v")
NORMS = ("ln1", "ln2")  # kept in float32 on every path


def lean_config(root: Path, module_types: list[str], hf_cfg: dict[str, Any], pooling: str,
                pool_cfg: dict[str, Any]) -> dict[str, Any] | None:
    """``config.json`` when this module can run the model exactly, else None (use sentence-transformers)."""
    if module_types not in (["Transformer", "Pooling", "Normalize"], ["Transformer", "Pooling"]):
        return None
    other_modes = ("max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens")
    if pooling not in ("mean", "cls") or any(pool_cfg.get(f"pooling_mode_{m}") for m in other_modes):
        return None
    return bert_config(root, hf_cfg)


def bert_config(root: Path, hf_cfg: dict[str, Any]) -> dict[str, Any] | None:
    """``config.json`` when its transformer is a BERT both forward passes here run exactly, else None."""
    if hf_cfg.get("model_type") != "bert" or hf_cfg.get("auto_map"):
        return None
    if hf_cfg.get("position_embedding_type", "absolute") != "absolute":
        return None
    if hf_cfg.get("hidden_act", "gelu") not in ACTIVATIONS or hf_cfg.get("is_decoder"):
        return None
    if not (root / "model.safetensors").is_file():
        return None
    return hf_cfg


class LeanBert:
    """BERT's encoder as a handful of tensors; ``token_embeddings`` is its forward pass."""

    def __init__(self, root: Path, cfg: dict[str, Any], device: str, dtype: str):
        import torch
        from safetensors.torch import load_file

        tensors = load_file(str(root / "model.safetensors"), device="cpu")
        prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
        self.device = device
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.heads = int(cfg["num_attention_heads"])
        self.act = ACTIVATIONS[cfg.get("hidden_act", "gelu")]
        self.half = getattr(torch, HALF[dtype]) if dtype in HALF else None
        # weights saved as float16/bf16 (a re-saved model) compute from float32 like any other
        fp32 = lambda k: tensors[prefix + k].to(device=device, dtype=torch.float32)  # noqa: E731
        mm_dtype = self.half or torch.float32  # matrix product operands
        mm = lambda k: fp32(k).to(mm_dtype)  # noqa: E731
        e = "embeddings."
        self.word, self.pos = fp32(e + "word_embeddings.weight"), fp32(e + "position_embeddings.weight")
        self.type0 = fp32(e + "token_type_embeddings.weight")[0]
        self.ln0 = (fp32(e + "LayerNorm.weight"), fp32(e + "LayerNorm.bias"))
        self.layers = []
        for i in range(int(cfg["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            qkv = [p + BERT_LAYER[n] for n in QKV]
            layer = {name: tuple((fp32 if name in NORMS else mm)(p + key + part) for part in PARTS)
                     for name, key in BERT_LAYER.items() if name not in QKV}
            # query, key and value in one matrix product
            layer["qkv"] = tuple(torch.cat([tensors[prefix + k + part] for k in qkv]).to(device, mm_dtype)
                                 for part in PARTS)
            self.layers.append(layer)
        self.hidden = self.word.shape[1]

    def token_embeddings(self, ids, mask):
        """float32 ``[rows, length, hidden]`` for int64 ``ids``; ``mask`` bool (True: a real token)
        or None when no row is padded."""
        import torch.nn.functional as F

        rows, length = ids.shape
        h, heads = self.hidden, self.heads
        x = F.embedding(ids, self.word) + self.pos[:length] + self.type0
        x = F.layer_norm(x, (h,), *self.ln0, self.eps)
        attn_mask = None if mask is None else mask[:, None, None, :]
        half = self.half
        for layer in self.layers:
            xin = x if half is None else x.to(half)
            qkv = F.linear(xin, *layer["qkv"]).view(rows, length, 3, heads, h // heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
            ctx = ctx.transpose(1, 2).reshape(rows, length, h)
            x = F.layer_norm(F.linear(ctx, *layer["out"]).float() + x, (h,), *layer["ln1"], self.eps)
            xin = x if half is None else x.to(half)
            up = F.linear(xin, *layer["up"])
            up = F.relu(up) if self.act is None else F.gelu(up, approximate=self.act)
            x = F.layer_norm(F.linear(up, *layer["down"]).float() + x, (h,), *layer["ln2"], self.eps)
        return x


SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4"}


def mapped_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file as read-only numpy views of the mapped file (no copy:
    only the pages a forward pass touches are read). bf16 tensors (no numpy dtype) are left out."""
    import mmap

    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    base = 8 + size
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(info.get("dtype"))
        if dtype is None:
            continue
        begin, end = info["data_offsets"]
        count = (end - begin) // np.dtype(dtype).itemsize
        out[name] = np.frombuffer(mapped, dtype, count, base + begin).reshape(info["shape"])
    return out


class NumpyBert:
    """:class:`LeanBert`'s forward pass in float32 numpy, one unpadded text at a time."""

    def __init__(self, tensors: dict[str, np.ndarray], cfg: dict[str, Any]):
        prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""

        def t(key: str) -> np.ndarray:
            w = tensors[prefix + key]  # a KeyError: not a BERT we can run (see load)
            if w.dtype != np.float32:  # a re-saved half model: LeanBert computes it from float32
                raise KeyError(key)
            return w

        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.heads = int(cfg["num_attention_heads"])
        self.act = ACTIVATIONS[cfg.get("hidden_act", "gelu")]
        e = "embeddings."
        self.word, self.pos = t(e + "word_embeddings.weight"), t(e + "position_embeddings.weight")
        self.type0 = t(e + "token_type_embeddings.weight")[0]
        self.ln0 = (t(e + "LayerNorm.weight"), t(e + "LayerNorm.bias"))
        self.layers = []
        for i in range(int(cfg["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            self.layers.append({name: tuple(t(p + key + part) for part in PARTS)
                                for name, key in BERT_LAYER.items()})
        self.hidden = self.word.shape[1]

    @classmethod
    def load(cls, root: Path, cfg: dict[str, Any]) -> NumpyBert | None:
        """None when the file lacks a float32 weight this forward pass needs."""
        try:
            return cls(mapped_safetensors(root / "model.safetensors"), cfg)
        except KeyError:
            return None

    def token_embeddings(self, ids: list[int], attended: np.ndarray | None = None) -> np.ndarray:
        """float32 ``[length, hidden]`` for one text's token ids (special tokens included).
        ``attended``: bool ``[length]``, the positions every token may attend to (BertModel's
        ``attention_mask``; a ColBERT query's [MASK] expansion may be computed but not attended to);
        None: all of them."""
        length, h, heads = len(ids), self.hidden, self.heads
        # BertModel adds the dtype's minimum to masked keys' scores: their softmax weight is 0
        bias = None if attended is None else np.where(attended, 0, np.finfo(np.float32).min).astype("f4")
        x = self.word[ids] + self.pos[:length] + self.type0
        x = _layer_norm(x, *self.ln0, self.eps)
        for layer in self.layers:
            q, k, v = (_linear(x, *layer[n]).reshape(length, heads, h // heads).transpose(1, 0, 2)
                       for n in ("q", "k", "v"))
            scores = (q @ k.transpose(0, 2, 1)) * np.float32(1 / math.sqrt(h // heads))
            if bias is not None:
                scores += bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            ctx = (scores / scores.sum(-1, keepdims=True)) @ v
            ctx = ctx.transpose(1, 0, 2).reshape(length, h)
            x = _layer_norm(_linear(ctx, *layer["out"]) + x, *layer["ln1"], self.eps)
            up = _activation(_linear(x, *layer["up"]), self.act)
            x = _layer_norm(_linear(up, *layer["down"]) + x, *layer["ln2"], self.eps)
        return x


def _linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return x @ weight.T + bias  # weight.T is a view: BLAS reads the stored [out, in] layout


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(-1, keepdims=True)
    return centred / np.sqrt(var + np.float32(eps)) * weight + bias


def _activation(x: np.ndarray, approximate: str | None) -> np.ndarray:
    """torch's gelu (exact: erf; "tanh": the tanh form) or relu (None), in float32."""
    if approximate is None:
        return np.maximum(x, 0)
    if approximate == "tanh":
        inner = np.float32(math.sqrt(2 / math.pi)) * (x + np.float32(0.044715) * x * x * x)
        return np.float32(0.5) * x * (1 + np.tanh(inner))
    # numpy has no erf: math.erf per element, in float64 (exact to float32 rounding); numpy BERT
    # runs only for a few hundred tokens, where this costs milliseconds
    flat = x.astype(np.float64).ravel()
    erf = np.fromiter(map(math.erf, (flat * (1 / math.sqrt(2))).tolist()), np.float64, flat.size)
    return (0.5 * flat * (1 + erf)).astype(np.float32).reshape(x.shape)
