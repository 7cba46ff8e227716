"""One object that says how a run is configured, passed from the CLI to the library.

Commands build a `RunSettings` from their options (each option is declared once, in
`cli/options.py`); the pipeline, the engines and worker processes receive it, as an
object or as JSON (`to_dict` / `from_dict`), never as a long positional list or a
hand-built argv.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from mspn_cli.errors import UsageError

__all__ = ["RunSettings"]


@dataclass(frozen=True)
class RunSettings:
    """Everything that decides which networks run and how; outputs are not part of it."""

    weights: Optional[str] = None  # MSPN weights: path or URL; None = the official file
    config: Optional[str] = None  # MSPN config TOML; None = packaged default
    detector_weights: Optional[str] = None
    detector_config: Optional[str] = None
    device: str = "cpu"
    backend: str = "auto"
    precision: str = "fp32"  # fp32 | bf16 | fp16: the networks' arithmetic (torch backend on --device cuda)
    flip: Optional[bool] = None  # None = the config's test.flip
    batch_size: Optional[int] = None  # persons per forward; None = the config's test.batch_size
    det_size: Optional[Tuple[int, int]] = None  # detector (short, max) side; None = config
    box_thr: Optional[float] = None  # None = the detector config's default for detected boxes; all given boxes
    max_persons: Optional[int] = None
    progress: bool = False  # show download/export progress

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise UsageError(f"--precision must be fp32, bf16 or fp16, got '{self.precision}'")
        if self.box_thr is not None and not (0.0 <= self.box_thr <= 1.0):
            raise UsageError("--box-thr must be between 0 and 1")
        if self.max_persons is not None and self.max_persons < 1:
            raise UsageError("--max-persons must be at least 1")
        if self.det_size is not None:
            short, longest = self.det_size
            from mspn_cli.config import detector_size_ok

            if not detector_size_ok(short, longest):
                raise UsageError(f"--det-size must satisfy 32 <= SHORT <= MAX <= 4096, got {short},{longest}")
            object.__setattr__(self, "det_size", (int(short), int(longest)))

    def replace(self, **changes: Any) -> "RunSettings":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["det_size"] is not None:
            data["det_size"] = list(data["det_size"])
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "RunSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown run settings: {', '.join(unknown)}")
        values = dict(data)
        if values.get("det_size") is not None:
            values["det_size"] = tuple(values["det_size"])
        return cls(**values)
