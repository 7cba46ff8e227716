"""Where a run's outputs go, decided before any work starts, and the writer that fills them.

`plan_annotated_images` maps every input to one annotated image path, unique even when
inputs share a file name (their relative folders are mirrored), never onto an input and
never over an existing file without --overwrite. `ImageResultsWriter` writes each
finished image as it comes (annotated image, JSONL line) and the JSON list at the end,
in input order, atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from mspn_cli.errors import OutputExistsError, UsageError
from mspn_cli.io.sources import IMAGE_EXTENSIONS
from mspn_cli.io.tasks import ImageOutcome, ImageTask
from mspn_cli.io.writers import JsonlWriter, check_output_path, creatable_folder_problem, refuse_output_onto_inputs, write_image_atomic, write_json_atomic

__all__ = ["plan_annotated_images", "ImageResultsWriter"]


def _common_folder(paths: Sequence[Path]) -> Path:
    try:
        return Path(os.path.commonpath([str(p.parent) for p in paths]))
    except ValueError:  # mixed absolute and relative, or other drives
        return Path("/")


def plan_annotated_images(tasks: Sequence[ImageTask], output: Optional[Path], overwrite: bool, suffix: str = "_pose",
                          what: str = "-o") -> Dict[int, Path]:
    """Task index -> annotated image path; checked, nothing created yet (folders are made on first write)."""
    if output is None:
        return {}
    output = Path(output)
    extension = output.suffix.lower()
    if not output.is_dir() and extension in IMAGE_EXTENSIONS:
        if len(tasks) != 1:
            raise UsageError(f"{what} {output} is a single image file but there are {len(tasks)} inputs; give a folder")
        check_output_path(output, overwrite, "output image")
        refuse_output_onto_inputs([output], [t.path for t in tasks])
        return {tasks[0].index: output}
    if not output.exists() and extension:
        raise UsageError(f"{what} {output}: an annotated image must be an image file (.jpg, .png, ...) or a folder")
    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"{what} {output} exists and is not a folder")
    problem = creatable_folder_problem(output)
    if problem is not None:
        raise OutputExistsError(f"cannot create output folder {output}: {problem}")

    usable = [t for t in tasks if t.error is None]
    paths = [Path(t.path).resolve() for t in usable]
    names = [f"{p.stem}{suffix}.jpg" for p in paths]
    if len(set(names)) < len(names):  # same file names in different folders: mirror the folders
        root = _common_folder(paths)
        names = [str(p.parent.relative_to(root) / f"{p.stem}{suffix}.jpg") if p.is_relative_to(root) else n
                 for p, n in zip(paths, names)]
    plan: Dict[int, Path] = {}
    seen: Dict[str, str] = {}
    for task, name in zip(usable, names):
        if name in seen:
            raise UsageError(f"{seen[name]} and {task.path} would both be drawn to {output / name}; rename one or run them apart")
        seen[name] = task.path
        target = output / name
        if target.exists() and not overwrite:
            raise OutputExistsError(f"output image {target} already exists; pass --overwrite to replace it")
        plan[task.index] = target
    refuse_output_onto_inputs(list(plan.values()), [t.path for t in tasks])
    return plan


class ImageResultsWriter:
    """Writes finished images as they come; the JSON list (in input order) at `finish`."""

    def __init__(self, json_out: Optional[str], jsonl: bool, annotated: Dict[int, Path],
                 draw: Callable[[ImageOutcome], np.ndarray], line_key: str = "instances"):
        self.json_out = json_out
        self.annotated = annotated
        self.draw = draw
        self.line_key = line_key
        self.jsonl = JsonlWriter("-") if jsonl else None
        self.records_by_index: Dict[int, List[dict]] = {}

    def add(self, outcome: ImageOutcome) -> None:
        """The annotated image first, the JSONL line last: a line on stdout means the image is done."""
        task = outcome.task
        target = self.annotated.get(task.index)
        if target is not None and outcome.image is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_image_atomic(target, self.draw(outcome))
        self.records_by_index[task.index] = outcome.records
        if self.jsonl is not None:
            self.jsonl.write({"image_id": task.image_id, "file_name": task.file_name, "path": task.path,
                              self.line_key: outcome.records})

    @property
    def images(self) -> int:
        return len(self.records_by_index)

    def records(self) -> List[dict]:
        return [record for index in sorted(self.records_by_index) for record in self.records_by_index[index]]

    def finish(self) -> Optional[int]:
        """Write the JSON list; returns the number of records written, or None when none was."""
        if self.json_out is None:
            return None
        records = self.records()
        write_json_atomic(self.json_out, records)
        return len(records)
