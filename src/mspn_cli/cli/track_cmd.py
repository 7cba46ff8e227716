"""`mspn track`: re-track, smooth and gap-fill saved video results without running a network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mspn_cli.cli.app import app
from mspn_cli.cli.common import console_err, guarded
from mspn_cli.errors import InputError, UsageError


@app.command("track")
@guarded
def track(
    results: Path = typer.Argument(
        ...,
        help="Saved results of a video run: the JSONL of `mspn keypoints VIDEO --jsonl` (a line per frame) "
        "or its `--json` output (a list of records with frame_index).",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Output JSONL: the input's frame lines, in frame order, "
                                "every instance given \"track_id\" (null when no track took it)."),
    fill_gaps: int = typer.Option(
        0, "--fill-gaps", min=0, metavar="N",
        help="Add poses linearly interpolated across gaps of at most N frames (of RESULTS) in a track, "
        "marked \"interpolated\": true. 0: none.",
    ),
    smooth: str = typer.Option(
        "none", "--smooth", metavar="none|oneeuro|savgol",
        help="Keypoint smoothing per track: none, oneeuro (online filter) or savgol (offline, both ways in "
        "time, weighted by keypoint scores). Unsmoothed coordinates are kept as \"keypoints_raw\".",
    ),
    track_buffer: Optional[int] = typer.Option(
        None, "--track-buffer", min=0, metavar="N",
        help="Frames a lost track is kept for re-matching where its motion predicts (default: tracking.track_buffer of the config, 30).",
        show_default=False,
    ),
    config: Optional[Path] = typer.Option(
        None, "--config", help="Tracking and smoothing config TOML (default: the packaged configs/tracking.toml).", show_default=False
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output file if it already exists."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary line on stderr."),
) -> None:
    """Give every person in saved video results a track id; optionally smooth and fill gaps.

    No network runs. The same input gives the same output bytes. Given its own output,
    it starts again from the observed poses (earlier interpolated ones are dropped,
    keypoints_raw is restored), so options can be changed and the command run again.
    """
    from mspn_cli.io.writers import atomic_write, check_output_path, refuse_output_onto_inputs, to_jsonable  # numpy, cv2: not at start-up
    from mspn_cli.tracking import SMOOTHING_METHODS, load_tracking_config, parse_results, retrack

    smooth = smooth.lower()
    if smooth not in SMOOTHING_METHODS:
        raise UsageError(f"--smooth must be one of {', '.join(SMOOTHING_METHODS)}, got {smooth!r}")
    tracking_config = load_tracking_config(config)
    text = _read_text(results)
    refuse_output_onto_inputs([output], [results])
    check_output_path(output, overwrite, "output")

    frames, _ = parse_results(text, str(results))
    lines, summary = retrack(frames, tracking_config, smooth=smooth, fill_gaps=fill_gaps, track_buffer=track_buffer)
    with atomic_write(output, "w", overwrite=overwrite) as handle:
        for line in lines:
            handle.write(json.dumps(to_jsonable(line)) + "\n")
    if not quiet:
        console_err.print(
            f"wrote {output}: {summary.frames} frame(s), {summary.poses} pose(s) in {summary.tracks} track(s), "
            f"{summary.untracked} untracked, {summary.interpolated} interpolated, smoothing {smooth}",
            soft_wrap=True, markup=False,
        )


def _read_text(path: Path) -> str:
    if path.is_dir():
        raise InputError(f"results {path} is a folder, not a JSONL or JSON file")
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InputError(f"results file {path} not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"results file {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"cannot read results file {path}: {exc.strerror or exc}") from None

