"""The CPU's caches, as the fused kernels and the benchmark's floor need them.

A reduction group that fits in one core's cache can be swept by one thread: its
statistics taken and the group normalized before it leaves the cache (docs/design.md
§11). "One core's cache" is the largest data cache private to a core (L2 on current x86
and Arm server parts), read from Linux's ``/sys/devices/system/cpu/cpu0/cache``;
``NORMGRAD_CACHE_BYTES`` overrides it, and where neither is available 1 MiB is assumed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ENV_VAR = "NORMGRAD_CACHE_BYTES"
#: Bytes of one cache line: what neighbouring columns of an (N, C) array share.
LINE_BYTES = 64
ASSUMED_BYTES = 1 << 20
SYS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")


@dataclass(frozen=True)
class CacheLevel:
    """One cache as cpu0 sees it: level (1, 2, 3), kind ("Data", "Instruction",
    "Unified"), size in bytes, and how many logical CPUs share it."""

    level: int
    kind: str
    size: int
    shared_by: int


def _size(text: str) -> int:
    text = text.strip()
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def _count_cpus(cpu_list: str) -> int:
    count = 0
    for part in cpu_list.strip().split(","):
        lo, _, hi = part.partition("-")
        count += int(hi) - int(lo) + 1 if hi else 1
    return count


@lru_cache(maxsize=1)
def cache_levels(root: Path = SYS_CACHE) -> tuple[CacheLevel, ...]:
    """Every cache of cpu0, innermost first; empty where /sys does not say."""
    levels = []
    for index in sorted(root.glob("index*")):
        try:
            levels.append(CacheLevel(
                int((index / "level").read_text()), (index / "type").read_text().strip(),
                _size((index / "size").read_text()),
                _count_cpus((index / "shared_cpu_list").read_text()),
            ))  # fmt: skip
        except (OSError, ValueError, KeyError, IndexError):
            continue
    return tuple(levels)


@lru_cache(maxsize=1)
def per_core_cache() -> tuple[int, str]:
    """``(bytes, where the figure comes from)`` of the largest data cache one core has to
    itself (a shared one counted at its share)."""
    override = os.environ.get(ENV_VAR)
    if override:
        try:
            return _size(override), f"{ENV_VAR}={override}"
        except (ValueError, IndexError):
            raise ValueError(
                f"the environment variable {ENV_VAR} must be a size in bytes such as "
                f"1048576 or 1024K; got {override!r}"
            ) from None
    data = [c for c in cache_levels() if c.kind in ("Data", "Unified")]
    private = [c for c in data if c.shared_by == 1]
    if private:
        best = max(private, key=lambda c: c.size)
        return best.size, f"L{best.level}, private to a core ({SYS_CACHE})"
    if data:
        inner = min(data, key=lambda c: c.level)
        return inner.size // inner.shared_by, f"L{inner.level} / {inner.shared_by} cpus"
    return ASSUMED_BYTES, "assumed (no cache information in /sys)"


def describe() -> str:
    """e.g. ``L1d 32K, L1i 32K, L2 1M, L3 32M (shared by 2)``."""
    parts = []
    for c in cache_levels():
        name = f"L{c.level}" + {"Data": "d", "Instruction": "i"}.get(c.kind, "")
        size = f"{c.size >> 20}M" if c.size >= 1 << 20 else f"{c.size >> 10}K"
        parts.append(name + " " + size + (f" (shared by {c.shared_by})" if c.shared_by > 1 else ""))
    return ", ".join(parts) or "unknown"
