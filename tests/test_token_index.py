"""The index on token vectors (`index --token-index`, issue 19): built on float tokens, searched by
`--mode maxsim` with the exact scan's answers, kept by re-runs, rebuilt when deleted, never built on
packed (int4, binary) tokens. Real model, real LanceDB, the samples (25 chunks, ~1,200 tokens).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from conftest import SAMPLES, read_ipc, run

from arrowsmith.commands.spaces import dense, multi
from arrowsmith.commands.store import open_table, table_path

EMBED = ["embed", "--dtype", "fp32", "--device", "cpu", "--multivector"]
QUERIES = ["why is the sky blue", "what makes the tides", "how to bake bread"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """The samples embedded with float16 and with int4 token vectors, not indexed."""
    root = tmp_path_factory.mktemp("token-index")
    chunked = run(["chunk", str(SAMPLES), "--max-tokens", "64"])
    assert chunked.exit_code == 0, chunked.stderr
    out = {}
    for name in ("float16", "int4"):
        r = run([*EMBED, "--db", str(root / name), "--token-precision", name], input=chunked.stdout_bytes)
        assert r.exit_code == 0, r.stderr
        out[name] = root / name
    return out


@pytest.fixture
def float16(stores, tmp_path) -> Path:
    db = tmp_path / "float16"
    shutil.copytree(stores["float16"], db)
    return db


def indexes(db: Path) -> dict[str, tuple[str, list[str]]]:
    return {ix.name: (ix.index_type, list(ix.columns)) for ix in open_table(db).list_indices()}


def maxsim_hits(db: Path, *extra: str, k: int = 5) -> list[tuple[str, str, float]]:
    r = run(["query", "--db", str(db), *QUERIES, "--mode", "maxsim", "-k", str(k), *extra, "-f", "arrows"])
    assert r.exit_code == 0, r.stderr
    return [(h["query_id"], h["id"], h["score"]) for h in read_ipc(r.stdout_bytes).to_pylist()]


def top1(hits: list[tuple[str, str, float]]) -> dict[str, str]:
    """Each query's best chunk (hits come best first)."""
    best: dict[str, str] = {}
    for q, i, _ in hits:
        best.setdefault(q, i)
    return best


def doctor_ok(db: Path) -> bool:
    r = run(["doctor", "--db", str(db)])
    return r.exit_code == 0 and "healthy" in r.stderr


def test_token_index_on_float16_tokens_answers_as_the_exact_scan(float16):
    r = run(["index", "--db", str(float16), "--token-index", "ivf_pq"])
    assert r.exit_code == 0, r.stderr
    assert "built tokens IVF_PQ" in r.stderr
    assert indexes(float16)[multi.INDEX_NAME] == ("IvfPq", ["tokens"])
    stats = json.loads(run(["index", "--db", str(float16), "--stats", "--json"]).stdout_bytes)
    (entry,) = [e for e in stats["indexes"] if e["name"] == multi.INDEX_NAME]
    tokens = next(r["tokens"] for r in stats["representations"] if r["representation"] == "multivector")
    assert entry["params"] == {"type": "IVF_PQ", "metric": "cosine", "sub_vectors": 48,
                               "partitions": dense.ivf_partitions(tokens)}
    assert entry["indexed_rows"] == stats["rows"] and entry["unindexed_rows"] == 0
    indexed, exact = maxsim_hits(float16), maxsim_hits(float16, "--exact", k=stats["rows"])
    # the index proposes candidates (each query token's nearest tokens), refine re-scores them exactly:
    # the same best chunk per query as the exact scan, each score that chunk's exact MaxSim
    assert top1(indexed) == top1(exact) and top1(indexed)["q1"].startswith("sky.md#")
    score = {(q, i): s for q, i, s in exact}
    assert [s for _, _, s in indexed] == pytest.approx([score[q, i] for q, i, _ in indexed], abs=1e-6)
    # a re-run with the same options changes nothing; doctor finds the table healthy
    version = open_table(float16).version
    r = run(["index", "--db", str(float16), "--token-index", "ivf_pq"])
    assert r.exit_code == 0 and "indexes up to date" in r.stderr
    assert open_table(float16).version == version and doctor_ok(float16)
    # the index's own tuning applies to --mode maxsim; an HNSW option is refused
    assert top1(maxsim_hits(float16, "--nprobes", "1", "--refine-factor", "20")) == top1(exact)
    r = run(["query", "--db", str(float16), QUERIES[0], "--mode", "maxsim", "--ef", "50"])
    assert r.exit_code == 2 and "--ef: no effect on the token index" in r.stderr
    # none drops it; --mode maxsim is the flat scan again, with the same answers
    r = run(["index", "--db", str(float16), "--token-index", "none"])
    assert r.exit_code == 0 and "no token index (dropped)" in r.stderr
    assert multi.INDEX_NAME not in indexes(float16)
    assert maxsim_hits(float16, k=stats["rows"]) == exact


def test_deleted_token_index_is_found_and_rebuilt_by_a_plain_index(float16):
    assert run(["index", "--db", str(float16), "--token-index", "ivf_pq"]).exit_code == 0
    (index_dir,) = [p.parent for p in (table_path(float16) / "_indices").glob("*/auxiliary.idx")]
    shutil.rmtree(index_dir)
    r = run(["doctor", "--db", str(float16)])
    (finding,) = [line for line in r.stdout_bytes.decode().splitlines() if line]
    assert r.exit_code == 1 and finding.startswith(f"index: index {multi.INDEX_NAME} cannot be opened")
    # auto builds none at this size, but rebuilds the one an earlier --token-index asked for
    r = run(["index", "--db", str(float16)])
    assert r.exit_code == 0, r.stderr
    assert "built tokens IVF_PQ" in r.stderr
    assert multi.INDEX_NAME in indexes(float16) and doctor_ok(float16)
    assert top1(maxsim_hits(float16)) == top1(maxsim_hits(float16, "--exact"))


def test_packed_tokens_get_no_token_index_and_say_maxsim_scans(stores, tmp_path):
    db = tmp_path / "int4"
    shutil.copytree(stores["int4"], db)
    r = run(["index", "--db", str(db), "--token-index", "ivf_pq"])
    assert r.exit_code == 2
    assert "int4 codes, which LanceDB cannot index" in r.stderr and "--rerank maxsim" in r.stderr
    r = run(["index", "--db", str(db)])
    assert r.exit_code == 0 and multi.INDEX_NAME not in indexes(db)
    r = run(["index", "--db", str(db), "--stats"])
    assert "--mode maxsim: exhaustive scan: --mode maxsim scans int4 token vectors" in r.stdout_bytes.decode()
    assert doctor_ok(db)


def test_token_index_without_token_vectors_is_exit_2(tmp_path):
    chunked = run(["chunk", str(SAMPLES / "sky.md")])
    db = tmp_path / "plain"
    assert run(["embed", "--dtype", "fp32", "--device", "cpu", "--db", str(db)], input=chunked.stdout_bytes
               ).exit_code == 0
    r = run(["index", "--db", str(db), "--token-index", "ivf_pq"])
    assert r.exit_code == 2 and "has no token vectors" in r.stderr and "embed --multivector" in r.stderr


def test_auto_indexes_float_tokens_from_the_threshold_with_partitions_for_the_token_count():
    f16, int4 = multi.TokenSettings(384, "float16"), multi.TokenSettings(128, "int4")
    assert multi.index_spec(multi.AUTO_MIN_TOKENS - 1, f16) is None
    spec = multi.index_spec(multi.AUTO_MIN_TOKENS, f16)
    assert spec == {"type": "IVF_PQ", "metric": "cosine", "sub_vectors": 48,
                    "partitions": multi.AUTO_MIN_TOKENS // 4_096}
    assert multi.index_spec(10 * multi.AUTO_MIN_TOKENS, int4) is None
    assert multi.index_spec(10 * multi.AUTO_MIN_TOKENS, f16, "none") is None
    assert multi.index_spec(1_000, f16, "ivf_pq")["partitions"] == 1  # never under 4,096 vectors a partition
    assert multi.index_spec(10**9, f16)["partitions"] == round(math.sqrt(10**9))  # √n from ~16.8M on


def test_compress_tokens_rebuilds_the_token_index_while_tokens_are_floats(float16):
    assert run(["index", "--db", str(float16), "--token-index", "ivf_pq"]).exit_code == 0
    # int4 codes cannot be indexed: the conversion rebuilds the other indexes, not this one
    r = run(["compress", "--db", str(float16), "--tokens", "int4"])
    assert r.exit_code == 0, r.stderr
    assert multi.INDEX_NAME not in indexes(float16) and doctor_ok(float16)
    assert run(["index", "--db", str(float16)]).exit_code == 0  # the recorded ivf_pq is not refused now
    assert top1(maxsim_hits(float16))["q1"].startswith("sky.md#")
