"""Human-readable quantities for stderr summaries."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KiB"`` (binary units, as `--budget 40KB` is parsed)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
