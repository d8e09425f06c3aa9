"""Sizes and durations: parsed from options (``--budget 64MB``, ``--grace 1h``), formatted for stderr."""

from __future__ import annotations

import re
from datetime import timedelta

from .errors import UsageError

# binary units throughout: KB = KiB = 1024 B, as `format_size` writes them
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
               "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(text: str, option: str = "size") -> int:
    """``"64MB"`` → 67108864, ``"500000"`` → 500000; UsageError naming ``option`` otherwise."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise UsageError(f"{option} {text!r}: expected a size such as 500000, 512KB, 64MB or 2GB")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def format_size(n: float) -> str:
    """``1536`` → ``"1.5 KiB"`` (binary units, as :func:`parse_size` reads them)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def parse_duration(text: str, option: str = "duration") -> timedelta:
    """``'1d'``, ``'12h'``, ``'30m'``, ``'45s'``, ``'2w'`` or a number of seconds (``'0'``)."""
    raw = text.strip().lower()
    try:
        if raw and raw[-1] in _DURATION_UNITS:
            return timedelta(seconds=float(raw[:-1]) * _DURATION_UNITS[raw[-1]])
        return timedelta(seconds=float(raw))
    except ValueError:
        raise UsageError(f"{option}: cannot read {text!r} as a duration (e.g. 1d, 12h, 30m, 0)") from None


def format_duration(seconds: float) -> str:
    """``3600`` → ``"1h"``, ``90`` → ``"90s"``: the largest unit that divides it, as options are written."""
    for unit in ("w", "d", "h", "m"):
        span = _DURATION_UNITS[unit]
        if seconds >= span and seconds % span == 0:
            return f"{seconds / span:g}{unit}"
    return f"{seconds:g}s"
