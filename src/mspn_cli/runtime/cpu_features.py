"""What this CPU offers the networks: vector extensions and native bfloat16.

Read from /proc/cpuinfo on Linux (no runtime needed, so `mspn doctor` can show them on
any installation); elsewhere the flags are unknown and only OpenVINO's own answer
(OPTIMIZATION_CAPABILITIES) decides whether bf16 runs.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Optional

# cpuinfo flag -> the name users know it by
FEATURE_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512_BF16", "amx_bf16": "AMX"}
# Native bf16 arithmetic: AMX tiles (Sapphire Rapids on) or AVX512_BF16 dot products (Cooper Lake, Zen 4/5).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class CpuFeatures:
    model: str
    flags: FrozenSet[str] = field(default_factory=frozenset)
    flags_known: bool = True  # False where /proc/cpuinfo does not exist (macOS, Windows)

    def has(self, flag: str) -> bool:
        return flag in self.flags

    @property
    def native_bf16(self) -> Optional[bool]:
        """True/False from the flags; None when the flags cannot be read here."""
        if not self.flags_known:
            return None
        return any(self.has(flag) for flag in BF16_FLAGS)

    def summary(self) -> Dict[str, Optional[bool]]:
        """{"AVX2": True, "AVX-512": ..., "AVX512_BF16": ..., "AMX": ...} (None: unknown)."""
        return {name: (self.has(flag) if self.flags_known else None) for flag, name in FEATURE_FLAGS.items()}

    def key_fields(self) -> Dict[str, object]:
        """What identifies this CPU for a cached bf16 verdict: its model and its relevant flags."""
        relevant = sorted(flag for flag in self.flags if flag.startswith(("avx", "amx", "fma", "f16c")))
        return {"cpu_model": self.model, "cpu_flags": relevant}


def parse_cpuinfo(text: str) -> CpuFeatures:
    """The first processor's model name and flags from /proc/cpuinfo text."""
    model = ""
    flags: FrozenSet[str] = frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        if model and flags:
            break
    return CpuFeatures(model or platform.processor() or "unknown", flags, flags_known=bool(flags))


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            return parse_cpuinfo(handle.read())
    except OSError:
        return CpuFeatures(platform.processor() or platform.machine() or "unknown", frozenset(), flags_known=False)


__all__ = ["BF16_FLAGS", "CpuFeatures", "FEATURE_FLAGS", "cpu_features", "parse_cpuinfo"]
