"""Where a run with videos writes: planned and checked before any network loads.

`-o FILE` (a video container) for a single video; `-o FOLDER` for anything else:
`<stem>_pose.mp4` per video, `<stem>_pose.jpg` per photo. `--json FILE` (or `-`) holds
every record of the run; `--json FOLDER/` gets one `<stem>.json` per video (and
`images.json` for the photos). Nothing may land on an input or, without --overwrite,
on an existing file; two inputs may not share an output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from mspn_cli.errors import OutputExistsError, UsageError
from mspn_cli.io.writers import check_output_path, creatable_folder_problem, refuse_output_onto_inputs

__all__ = ["VideoOutputPlan", "plan_video_outputs", "is_folder_target"]

PHOTOS_JSON_NAME = "images.json"


@dataclass
class VideoOutputPlan:
    overwrite: bool
    fourcc: Optional[str]  # --fourcc, else the container's default
    default_fourcc: Dict[str, str]
    video_outputs: Dict[str, Path] = field(default_factory=dict)  # video source -> annotated video
    video_json: Dict[str, Path] = field(default_factory=dict)  # video source -> its JSON (--json FOLDER/)
    photo_outputs: Dict[int, Path] = field(default_factory=dict)  # photo task index -> annotated image
    photos_json: Optional[Path] = None  # --json FOLDER/: the photos' records
    json_file: Optional[str] = None  # --json FILE or '-': every record of the run

    def fourcc_for(self, path: Path) -> str:
        return self.fourcc or self.default_fourcc[path.suffix.lower().lstrip(".")]


def is_folder_target(text: Optional[str]) -> bool:
    """`--json DIR/` or an existing folder means one JSON file per video."""
    return text not in (None, "-") and (str(text).endswith(("/", "\\")) or Path(str(text)).is_dir())


def _stem(item) -> str:
    from mspn_cli.io.video_source import stream_display_name

    return Path(stream_display_name(item.stream)).stem if item.stream is not None else item.path.stem


def plan_video_outputs(tasks: Sequence, videos: Sequence, output: Optional[Path], json_out: Optional[str],
                       overwrite: bool, fourcc: Optional[str], video_config) -> VideoOutputPlan:
    containers = video_config.output.fourcc
    if fourcc is not None and len(fourcc) != 4:
        raise UsageError(f"--fourcc must be 4 characters (such as VP90, MJPG, mp4v), got {fourcc!r}")
    plan = VideoOutputPlan(overwrite, fourcc, dict(containers))
    inputs: List[str] = [str(t.path) for t in tasks] + [str(v.path) for v in videos if v.stream is None]
    planned: List[Path] = []

    if output is not None:
        output = Path(output)
        if output.suffix and not output.is_dir():
            extension = output.suffix.lower().lstrip(".")
            if extension not in containers:
                raise UsageError(f"-o {output}: a video is written as {', '.join('.' + c for c in containers)} "
                                 "(or give a folder)")
            if len(videos) != 1 or tasks:
                raise UsageError(f"-o {output} is a single video file but there are {len(videos) + len(tasks)} inputs; give a folder")
            check_output_path(output, overwrite, "output video")
            plan.video_outputs[videos[0].source] = output
        else:
            _check_folder(output, "-o")
            if tasks:
                from mspn_cli.io.outputs import plan_annotated_images

                plan.photo_outputs = plan_annotated_images(tasks, output, overwrite)
            names = _unique_names(videos, video_config.output.suffix + video_config.output.folder_extension, output)
            for item, name in zip(videos, names):
                plan.video_outputs[item.source] = _fresh(output / name, overwrite, "output video")
        planned += list(plan.video_outputs.values()) + list(plan.photo_outputs.values())

    if is_folder_target(json_out):
        folder = Path(str(json_out))
        _check_folder(folder, "--json")
        names = _unique_names(videos, ".json", folder, reserved={PHOTOS_JSON_NAME} if tasks else set())
        for item, name in zip(videos, names):
            plan.video_json[item.source] = _fresh(folder / name, overwrite, "JSON output")
        if tasks:
            plan.photos_json = _fresh(folder / PHOTOS_JSON_NAME, overwrite, "JSON output")
        planned += list(plan.video_json.values()) + ([plan.photos_json] if plan.photos_json else [])
    elif json_out is not None:
        plan.json_file = str(json_out)
    refuse_output_onto_inputs(planned, inputs)
    for folder_output in {p.parent for p in planned}:
        if folder_output.exists() and not folder_output.is_dir():
            raise OutputExistsError(f"{folder_output} exists and is not a folder")
    return plan


def _check_folder(folder: Path, what: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"{what} {folder} exists and is not a folder")
    problem = creatable_folder_problem(folder)  # a missing folder is created on the first write
    if problem is not None:
        raise OutputExistsError(f"cannot create {what} folder {folder}: {problem}")


def _unique_names(videos: Sequence, ending: str, folder: Path, reserved=frozenset()) -> List[str]:
    names: List[str] = []
    owners: Dict[str, str] = {}
    for item in videos:
        name = _stem(item) + ending
        if name in owners or name in reserved:
            other = owners.get(name, "the photos' records")
            raise UsageError(f"{other} and {item.source} would both be written to {folder / name}; rename one or run them apart")
        owners[name] = item.source
        names.append(name)
    return names


def _fresh(path: Path, overwrite: bool, what: str) -> Path:
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{what} {path} already exists; pass --overwrite to replace it")
    return path
