"""Model cards (README.md) of the models arrowsmith writes (``tune``, ``distill``): where a model
came from and what it bought.

The JSON block at the end is machine-readable; its ``matryoshka_dims`` is what the model plugin
reads so that ``embed --dim`` knows the model was trained for those dims, and its ``distill``
record is carried into the card of a model tuned from a distilled one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .negatives import MAX_RELATIVE_SCORE


def model_card(info: dict[str, Any], before_after: str | None) -> str:
    t = info["training"]
    loss = "MultipleNegativesRankingLoss (in-batch negatives"
    loss += f" + {t['negatives_per_pair']} negative(s) per pair" if t["negatives_per_pair"] else ""
    if t.get("hard_negatives"):
        loss += (f", {t['hard_negatives']} mined with the base model: its top-ranked passages that are no "
                 f"judged positive and score below {MAX_RELATIVE_SCORE:g} x the pair's positive")
    loss += ")"
    if t.get("guide"):
        loss = (f"GISTEmbedLoss, guide {t['guide']}: {loss} without the negatives the guide scores at or "
                f"above {MAX_RELATIVE_SCORE:g} x the pair's positive")
    if t.get("matryoshka_dims"):
        loss = f"MatryoshkaLoss(dims {', '.join(map(str, t['matryoshka_dims']))}) over {loss}"
    mv = info.get("multivector")
    if mv:  # tune --multivector: MaxSim over token vectors instead of cosine of pooled vectors
        loss = loss.replace("MultipleNegativesRankingLoss", f"{t['loss']}, MaxSim scores", 1)
    rows = [
        ("base model", f"{info['base_model']['name']} (revision {info['base_model']['revision']})"),
        ("data", f"{info['data']['source']} (sha256 {info['data']['sha256']})"),
        ("pairs", f"{info['data']['pairs']:,}"),
        ("loss", loss),
        ("weights trained", f"LoRA rank {t['lora']} adapters, merged" if t.get("lora") else "all"),
        ("epochs", f"{t['epochs']:g}"),
        ("batch size", str(t["batch_size"])),
        ("learning rate", f"{t['lr']:g} (linear warm-up over {t['warmup']:.0%} of the steps, then decay)"),
        ("max sequence tokens (training)", str(t["max_seq_tokens"])),
        ("seed", str(t["seed"])),
        ("steps", f"{t['steps']:,}"),
        ("device", t["device"]),
    ]
    if info.get("distill"):
        rows.insert(1, ("distilled from", distill_origin(info["distill"])))
    if mv:
        head = mv.get("head") or (f"new, seeded; skiplist {mv.get('skiplist')}, prefixes "
                                  f"{mv.get('prefixes') or 'none'}, query expansion "
                                  f"{mv.get('query_expansion') or 'none'}")
        rows.insert(1, ("token head", f"{mv['token_dim']}-d ({head})"))
    if info["data"].get("note"):
        rows.append(("note", info["data"]["note"]))
    intro = (f"Tuned from {info['base_model']['name']} with `arrowsmith tune`. It is an ordinary "
             "sentence-transformers model directory (`--model DIR` in embed, eval, compress); its vectors "
             "are a new embedding space, so a table built with the base model refuses them without "
             "`--replace`.")
    if mv:
        intro = (f"Tuned from {info['base_model']['name']} with `arrowsmith tune --multivector`. It is a "
                 "sentence-transformers MultiVectorEncoder (ColBERT-style) directory: `embed --multivector "
                 "--model DIR` stores its token vectors, `query --mode maxsim` or `--rerank maxsim` scores "
                 "them. Before / after compares MaxSim over the base model's own token vectors (zero-shot) "
                 "with MaxSim over this model's.")
    before = before_after.rstrip() if before_after else "Not evaluated (run `arrowsmith tune … --eval DIR`)."
    return render_card(info, "arrowsmith-tune", intro, rows,
                       [("Before / after", before)], record="Training record")


def render_card(info: dict[str, Any], tag: str, intro: str, rows: list[tuple[str, str]],
                sections: list[tuple[str, str]], *, record: str) -> str:
    """Front matter, a title, a table of ``rows``, ``sections`` and ``info`` as a JSON block."""
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        f"tags: [sentence-transformers, {tag}]",
        "---",
        "",
        f"# {info['name']}",
        "",
        intro,
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
    ]
    for title, body in sections:
        lines += [f"## {title}", "", body, ""]
    lines += [
        f"## {record}",
        "",
        "```json",
        json.dumps(info, indent=1, sort_keys=True, default=str),
        "```",
        "",
    ]
    return "\n".join(lines)


def card_record(model_dir: str | Path) -> dict[str, Any]:
    """The JSON block of a card arrowsmith wrote ({} for any other model, or no card)."""
    try:
        text = (Path(model_dir) / "README.md").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    blocks = re.findall(r"```json\n(.*?)\n```", text, flags=re.S)
    try:
        record = json.loads(blocks[-1]) if blocks else {}
    except json.JSONDecodeError:
        return {}
    return record if isinstance(record, dict) else {}


def distill_origin(d: dict[str, Any]) -> str:
    """One line: the transformer a static model was distilled from, and how."""
    base, size = d.get("base_model", {}), d.get("vocabulary", {}).get("size")
    return (f"{base.get('name')} (revision {base.get('revision')}) by `arrowsmith distill`: "
            f"{f'{size:,}' if isinstance(size, int) else '?'} tokens x {d.get('dim')} dims")
