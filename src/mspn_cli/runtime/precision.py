"""Reduced precision, checked before it is trusted: the bf16 verdict per CPU.

A network compiled for bf16 is compared with the same graph in f32 on a deterministic
verification batch the first time it runs on a machine; the verdict is cached in
`<MSPN_HOME>/graphs/openvino/` keyed by the CPU (model and flags), the runtime's version
and the graph, so later runs start at once. A failed verdict makes `--precision bf16`
refuse with the reason (OpenVINO issue #38256 reports corrupted bf16 results on a Zen 5
CPU; a check on the machine itself is the only honest guard).

The criteria, for every output map (one channel of one sample):
  * error: max |bf16 - f32| over the map, relative to the f32 map's value range. bf16
    keeps 8 bits of mantissa, so a sound network lands around 1% (measured on this
    project's graphs with seeded weights: MSPN median 1.0%, worst 1.9% of 34 maps;
    RetinaNet median 1.1%, 99th percentile 3%, worst 6.2% of 7560 maps, on a 2 x 3 map
    whose small range magnifies rounding); a broken kernel gives errors of the order of
    the range itself, on most maps. Limits: median 2.5%, 99th percentile 5%, worst 10%.
  * peaks: where the f32 peak stands out (it exceeds everything outside its 3 x 3
    neighbourhood by at least PROMINENCE of the range), bf16 must put its peak within
    one map pixel. Flat maps (random weights give many) say nothing about peaks and are
    left out of this criterion, not counted as agreeing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from mspn_cli.errors import UsageError

log = logging.getLogger(__name__)

from mspn_cli.settings import PRECISIONS  # noqa: E402 - declared with RunSettings, which validates it
MAX_MAP_ERROR = 0.10  # worst map: at most 10% of its range (tiny maps magnify rounding)
P99_MAP_ERROR = 0.05  # 99th percentile of the maps: at most 5% of their range
MEDIAN_MAP_ERROR = 0.025  # typical map: at most 2.5% of its range (a sound bf16 network: ~1%)
PROMINENCE = 0.02  # a peak "stands out" when it beats the rest by 2% of the map's range
MIN_PEAK_AGREEMENT = 0.95  # of the maps whose peak stands out


def check_precision_name(precision: str) -> str:
    value = str(precision or "fp32").lower()
    if value not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    return value


@dataclass
class PrecisionComparison:
    """How a reduced-precision run compares with f32 on the verification batch."""

    maps: int = 0
    worst_error: float = 0.0  # max over maps of max|diff| / range
    median_error: float = 0.0
    prominent_maps: int = 0
    peaks_agreeing: int = 0
    problems: List[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        peaks = f"{self.peaks_agreeing}/{self.prominent_maps} prominent peaks agree" if self.prominent_maps else "no prominent peaks"
        return f"{self.maps} maps, error worst {self.worst_error:.2%} median {self.median_error:.2%} of range, {peaks}"


def _as_maps(array: np.ndarray) -> np.ndarray:
    """(maps, H, W): every channel of every sample of a 4-D output; anything else as one map."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 4:
        return array.reshape(-1, array.shape[2], array.shape[3])
    return array.reshape(1, 1, -1)


def map_errors(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per map: max |candidate - reference| / (reference's max - min); inf where a flat map changed."""
    ref, cand = _as_maps(reference), _as_maps(candidate)
    spread = (ref.max(axis=(1, 2)) - ref.min(axis=(1, 2)))
    diff = np.abs(cand - ref).max(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(spread > 0, diff / np.where(spread > 0, spread, 1.0), np.where(diff > 0, np.inf, 0.0))


def peak_agreement(reference: np.ndarray, candidate: np.ndarray, prominence: float = PROMINENCE):
    """(maps whose reference peak stands out, of those the ones whose candidate peak is within 1 pixel)."""
    ref, cand = _as_maps(reference), _as_maps(candidate)
    count = agreeing = 0
    height, width = ref.shape[1:]
    for ref_map, cand_map in zip(ref, cand):
        spread = ref_map.max() - ref_map.min()
        if spread <= 0:
            continue
        y, x = np.unravel_index(int(np.argmax(ref_map)), ref_map.shape)
        outside = ref_map.copy()
        outside[max(0, y - 1):y + 2, max(0, x - 1):x + 2] = -np.inf
        rest = outside.max() if np.isfinite(outside).any() else ref_map.min()
        if (ref_map[y, x] - rest) < prominence * spread:
            continue
        count += 1
        cy, cx = np.unravel_index(int(np.argmax(cand_map)), cand_map.shape)
        agreeing += int(abs(int(cy) - int(y)) <= 1 and abs(int(cx) - int(x)) <= 1)
    return count, agreeing


def compare_precisions(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> PrecisionComparison:
    """The criteria above over every output of one verification batch."""
    result = PrecisionComparison()
    if len(reference) != len(candidate):
        result.problems.append(f"{len(candidate)} outputs instead of {len(reference)}")
        return result
    errors: List[np.ndarray] = []
    for index, (ref, cand) in enumerate(zip(reference, candidate)):
        if np.shape(ref) != np.shape(cand):
            result.problems.append(f"output {index} is shaped {np.shape(cand)} instead of {np.shape(ref)}")
            return result
        if not np.all(np.isfinite(cand)):
            result.problems.append(f"output {index} has non-finite values")
            return result
        errors.append(map_errors(ref, cand))
        prominent, agreeing = peak_agreement(ref, cand)
        result.prominent_maps += prominent
        result.peaks_agreeing += agreeing
    every = np.concatenate(errors) if errors else np.zeros(0)
    result.maps = int(every.size)
    result.worst_error = float(every.max()) if every.size else 0.0
    result.median_error = float(np.median(every)) if every.size else 0.0
    if result.worst_error > MAX_MAP_ERROR:
        result.problems.append(f"the worst map is off by {result.worst_error:.1%} of its range (limit {MAX_MAP_ERROR:.0%})")
    p99 = float(np.percentile(every, 99)) if every.size else 0.0
    if p99 > P99_MAP_ERROR:
        result.problems.append(f"1% of the maps are off by more than {p99:.1%} of their range (limit {P99_MAP_ERROR:.0%})")
    if result.median_error > MEDIAN_MAP_ERROR:
        result.problems.append(f"the median map is off by {result.median_error:.1%} of its range (limit {MEDIAN_MAP_ERROR:.1%})")
    if result.prominent_maps and result.peaks_agreeing < MIN_PEAK_AGREEMENT * result.prominent_maps:
        result.problems.append(f"only {result.peaks_agreeing} of {result.prominent_maps} prominent peaks stay within one pixel")
    return result


def verification_batch(shape: Sequence[int], seed: int = 20) -> np.ndarray:
    """A deterministic N x 3 x H x W batch in the normalised-image range: smooth blobs and edges, mild noise.

    Image-like (a network's features respond to structure, as on real crops), and the same
    on every machine, so a verdict depends on the CPU and runtime only.
    """
    count, channels, height, width = (int(v) for v in shape)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    batch = np.empty((count, channels, height, width), dtype=np.float32)
    for n in range(count):
        canvas = np.zeros((channels, height, width), dtype=np.float32)
        for _ in range(6):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            sigma = rng.uniform(0.05, 0.2) * min(height, width)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
            canvas += rng.uniform(-1.5, 1.5, size=(channels, 1, 1)).astype(np.float32) * blob
        canvas += (xx / width - 0.5)[None] * rng.uniform(-1, 1)
        canvas += rng.normal(0, 0.1, size=canvas.shape).astype(np.float32)
        batch[n] = np.clip(canvas, -2.1, 2.6)
    return batch


@dataclass
class Bf16Verdict:
    passed: bool
    reason: str  # what was measured (passed) or why it failed
    key: Dict[str, object]

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


def verdict_path(directory: Path, key_fields: Dict[str, object]) -> Path:
    from mspn_cli.export.cache import cache_key

    return Path(directory) / f"bf16-verdict-{cache_key(**key_fields)}.json"


def load_verdict(path: Path, key_fields: Dict[str, object]) -> Optional[Bf16Verdict]:
    """The cached verdict for exactly these key fields, or None (missing, unreadable, another key)."""
    try:
        data = json.loads(Path(path).read_text())
        verdict = Bf16Verdict(bool(data["passed"]), str(data["reason"]), dict(data["key"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return verdict if verdict.key == json.loads(json.dumps(key_fields, default=str)) else None


def bf16_verdict(
    directory: Optional[Path], key_fields: Dict[str, object], run_reference: Callable[[np.ndarray], List[np.ndarray]],
    run_bf16: Callable[[np.ndarray], List[np.ndarray]], batch: np.ndarray,
) -> Bf16Verdict:
    """The cached verdict for this CPU, runtime and graph, or a fresh check (cached when possible)."""
    path = verdict_path(directory, key_fields) if directory is not None else None
    if path is not None:
        cached = load_verdict(path, key_fields)
        if cached is not None:
            log.info("bf16 verdict for this CPU from %s: %s", path, "passed" if cached.passed else "failed")
            return cached
    log.warning("checking bf16 against f32 on this CPU (once; the verdict is cached)")
    comparison = compare_precisions(run_reference(batch), run_bf16(batch))
    reason = comparison.describe() if comparison.passed else "; ".join(comparison.problems)
    verdict = Bf16Verdict(comparison.passed, reason, json.loads(json.dumps(key_fields, default=str)))
    if path is not None:
        from mspn_cli.io.writers import write_json_atomic

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, verdict.to_dict(), indent=1)
        except (OSError, Exception) as exc:  # noqa: BLE001 - an unwritable cache only costs the check next time
            log.warning("cannot cache the bf16 verdict in %s (%s)", path, exc)
    return verdict


__all__ = [
    "Bf16Verdict", "PRECISIONS", "PrecisionComparison", "bf16_verdict", "check_precision_name", "compare_precisions",
    "load_verdict", "map_errors", "peak_agreement", "verdict_path", "verification_batch",
]
