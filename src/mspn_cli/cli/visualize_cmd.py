"""`mspn visualize`: draw keypoint results from a JSON file onto their image."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

import typer

from mspn_cli.cli import options as opt
from mspn_cli.cli.app import app
from mspn_cli.cli.common import console_err, guarded, warn
from mspn_cli.io.jsonio import read_json_file
from mspn_cli.errors import InputError, OutputError

if TYPE_CHECKING:  # numpy is imported only when the command runs
    import numpy as np

JPEG_QUALITY = 95


@app.command("visualize")
@guarded
def visualize(
    image: Path = typer.Argument(..., help="Image to draw on (JPEG, PNG, ...; gray, RGBA and 16-bit are converted)."),
    keypoints: Path = typer.Option(
        ...,
        "--keypoints",
        "-k",
        help="COCO keypoint results JSON (a list of records), as written by `mspn keypoints` or `mspn eval-coco`.",
    ),
    output: Optional[Path] = typer.Option(
        None,
        "--output",
        "-o",
        help="Output image; its extension picks the format. An existing folder means <folder>/<stem>_vis.jpg. "
        "Default: ./<image stem>_vis.jpg.",
        show_default=False,
    ),
    kpt_thr: float = opt.KPT_THR,
    no_boxes: bool = typer.Option(False, "--no-boxes", help="Do not draw person boxes and their scores."),
    image_id: Optional[int] = typer.Option(
        None,
        "--image-id",
        help="Use the records with this image_id, instead of matching by file name or numeric file stem. "
        "Default: match file_name, else image_id = numeric stem, e.g. 000000000785.jpg → 785.",
        show_default=False,
    ),
    overwrite: bool = opt.OVERWRITE,
    allow_truncated: bool = opt.ALLOW_TRUNCATED,
) -> None:
    """Draw skeletons and person boxes from a keypoint results JSON onto IMAGE."""
    # numpy, OpenCV and the drawing code load here, not at module level: `mspn --help` stays light.
    import cv2

    from mspn_cli.visualize import draw_records

    from mspn_cli.io.writers import check_output_path, refuse_output_onto_inputs

    out_path = _resolve_output(image, output)
    refuse_output_onto_inputs([out_path], [image, keypoints])
    check_output_path(out_path, overwrite, "output image")
    picture = read_image_bgr(image, allow_truncated)
    records = load_results(keypoints)
    if not out_path.suffix or not cv2.haveImageWriter(str(out_path)):
        extension = out_path.suffix or "(none)"
        raise OutputError(f"cannot write {out_path}: unsupported image extension {extension!r}; use .jpg or .png")

    selected = select_records(records, image, image_id)
    if not selected:
        ids = sorted({r.get("image_id") for r in records if isinstance(r.get("image_id"), int)})
        shown = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "") if ids else "none"
        wanted = f"image_id {image_id}" if image_id is not None else f"image {image.name}"
        warn(
            f"no results for {wanted} in {keypoints} (image ids present: {shown}); "
            "writing the image without skeletons (use --image-id to choose records)"
        )

    drawn = draw_records(picture, selected, kpt_thr=kpt_thr, draw_boxes=not no_boxes)
    write_image_atomic(out_path, drawn, overwrite=overwrite)
    people = f"{len(selected)} {'person' if len(selected) == 1 else 'people'}"
    console_err.print(f"wrote {out_path} ({people})", soft_wrap=True, markup=False)


def _resolve_output(image: Path, output: Optional[Path]) -> Path:
    default_name = f"{image.stem}_vis.jpg"
    if output is None:
        return Path(default_name)
    if output.is_dir():
        return output / default_name
    return output


def read_image_bgr(path: Path, allow_truncated: bool = False) -> "np.ndarray":
    """The image as `mspn keypoints` decoded it (the package's one reader), so keypoints land on its pixels."""
    from mspn_cli.io.sources import read_image

    return read_image(path, allow_truncated=allow_truncated)


def load_results(path: Path) -> List[Any]:
    """Read a results JSON file and check every record; InputError names the problem."""
    from mspn_cli.visualize import records_to_arrays

    records = read_json_file(path, "results file")

    if not isinstance(records, list):
        hint = ""
        if isinstance(records, dict) and "annotations" in records:
            hint = " (this looks like a COCO annotation file, not a results file)"
        found = _json_type(records)
        raise InputError(f"{path} must hold a JSON list of keypoint result records, found a {found}{hint}")
    try:
        records_to_arrays(records)  # validates every record, so errors name the file
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    return records


def select_records(records: List[Any], image: Path, image_id: Optional[int]) -> List[Any]:
    """The records for this image: by --image-id if given, else file_name, else numeric stem."""
    if image_id is not None:
        return [r for r in records if _same_id(r.get("image_id"), image_id)]
    by_name = [r for r in records if _basename(r.get("file_name")) == image.name]
    if by_name:
        return by_name
    if image.stem.isdigit():
        stem_id = int(image.stem)
        return [r for r in records if _same_id(r.get("image_id"), stem_id)]
    return []


def write_image_atomic(path: Path, image: "np.ndarray", overwrite: bool) -> None:
    """Encode, write a temporary file beside `path`, then move it into place in one step.

    A reader never sees a half-written image, and an interrupted run leaves the old file.
    """
    import cv2

    from mspn_cli.io.writers import write_bytes_atomic

    suffix = path.suffix.lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if suffix in (".jpg", ".jpeg") else []
    try:
        ok, encoded = cv2.imencode(suffix or ".none", image, params)
    except cv2.error:
        ok = False
    if not ok:
        raise OutputError(f"cannot write {path}: unsupported image extension {suffix or '(none)'!r}; use .jpg or .png")

    try:
        write_bytes_atomic(path, encoded.tobytes(), overwrite=overwrite)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def _basename(name: Any) -> Optional[str]:
    # Records may carry POSIX or Windows paths; compare only the last component.
    if not isinstance(name, str) or not name:
        return None
    return re.split(r"[\\/]", name)[-1]


def _same_id(value: Any, wanted: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value == wanted


def _json_type(value: Any) -> str:
    return {dict: "JSON object", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )
