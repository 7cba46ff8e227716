"""The output side of a run as one object, declared once and built once by the command.

`RunOutputs` holds where results go (every output target), whether existing files may
be replaced, how the annotated images are drawn, how loud the run is and the report
it fills. The runners (`cli/keypoints_scale.py`, `cli/video_run.py`) take it instead
of a dozen loose parameters. `check` is the one place that refuses output targets,
before anything is created, moved or deleted.

A new file target (such as `--labels OUT.json` or `--csv OUT.csv`) is one more field
and one more entry in `FILE_TARGETS`: it gets the same checks (an existing file needs
--overwrite, a missing folder is created on the first write, no output onto an input).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

from mspn_cli.cli.common import BatchReport
from mspn_cli.errors import UsageError

__all__ = ["RunOutputs"]


@dataclass
class RunOutputs:
    json_out: Optional[str] = None  # --json FILE, '-' (stdout), or FOLDER/ (one file per video)
    jsonl: bool = False  # one JSON line per image or frame on stdout
    annotated: Optional[Path] = None  # -o: an image or video file, or a folder
    overwrite: bool = False
    fail_fast: bool = False
    quiet: bool = False
    kpt_thr: float = 0.2  # the command passes its --kpt-thr
    radius: Optional[float] = None
    thickness: Optional[float] = None
    fourcc: Optional[str] = None  # video containers
    labels: Optional[str] = None  # --labels FILE: a COCO keypoint dataset
    csv_out: Optional[str] = None  # --csv FILE: one row per person
    report: BatchReport = field(default_factory=BatchReport)

    # The single-file targets: (field, how messages call it). Each is checked the same way.
    FILE_TARGETS: ClassVar[Tuple[Tuple[str, str], ...]] = (
        ("json_out", "JSON output"), ("labels", "labels output"), ("csv_out", "CSV output"),
    )

    @property
    def drawing(self) -> Dict[str, Any]:
        """The drawing style: what `PoseResult.plot` takes."""
        return {"kpt_thr": self.kpt_thr, "radius": self.radius, "thickness": self.thickness}

    def to_stdout(self) -> List[str]:
        """The outputs that write to stdout ('-' targets, --jsonl)."""
        names = [name for name, _ in self.FILE_TARGETS if str(getattr(self, name) or "") == "-"]
        return names + (["jsonl"] if self.jsonl else [])

    def file_targets(self, folder_targets: Sequence[str] = ()) -> List[Tuple[str, Path]]:
        """(what, path) of each single-file target that is set; `folder_targets` (fields) are left out."""
        return [(what, Path(str(getattr(self, name)))) for name, what in self.FILE_TARGETS
                if getattr(self, name) not in (None, "-") and name not in folder_targets]

    def check(self, inputs: Sequence[Any], replaceable: Callable[[Path], bool] = lambda _path: False,
              folder_targets: Sequence[str] = ()) -> None:
        """Refuse, before any work, what cannot or must not be written.

        `replaceable(path)`: whether an existing file is this run's own unfinished result
        (an interrupted run's, its checkpoint beside it), which a rerun may replace.
        """
        from mspn_cli.io.writers import check_output_path, refuse_output_onto_inputs

        stdout = self.to_stdout()
        if len(stdout) > 1:
            flags = " and ".join("--jsonl" if name == "jsonl" else f"--{name.split('_')[0]} -" for name in stdout)
            raise UsageError(f"{flags} both write to stdout; choose one")
        named = [str(path.resolve()) for _, path in self.file_targets(folder_targets)]
        if len(set(named)) < len(named):
            raise UsageError("--json, --labels and --csv must name different files")
        for what, path in self.file_targets(folder_targets):
            check_output_path(path, self.overwrite or replaceable(path), what)
        targets = [path for _, path in self.file_targets()] + ([self.annotated] if self.annotated is not None else [])
        refuse_output_onto_inputs(targets, inputs)
