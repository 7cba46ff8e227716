"""What `eval-coco` and `merge-results` show and write after scoring: table, log, summary, exit code."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import typer

from mspn_cli.cli.common import console_err, warn
from mspn_cli.errors import EXIT_OK, EXIT_PARTIAL

if TYPE_CHECKING:  # the library (numpy, pycocotools) is imported only when a command runs
    from mspn_cli.evaluation.cocoeval import EvalReport
    from mspn_cli.evaluation.selection import DetectionSelection


def eval_log_path(results: Path) -> Path:
    """pycocotools' printout goes next to the results: RESULTS.eval.log."""
    return results.with_name(results.stem + ".eval.log")


def root_verbosity(ctx: typer.Context) -> int:
    """The root's -v count (`mspn -v eval-coco ...`): -v also prints pycocotools' output."""
    return int(ctx.find_root().params.get("verbose") or 0)


def print_stats_table(report: EvalReport, title: str) -> None:
    """This run, the published mspn_4stage row and the difference, on stderr.

    One row per source when the console is wide enough, else one row per stat (so
    nothing is truncated in a narrow terminal or a log file).
    """
    from rich.table import Table

    from mspn_cli.evaluation.cocoeval import STAT_LABELS, STAT_NAMES, published_stats

    def shown(value: Optional[float], signed: bool = False) -> str:
        # None: no ground truth in that area range (pycocotools prints -1).
        return "n/a" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")

    diffs = report.differences()
    published = published_stats()
    rows = [
        ("this run", [shown(report.stats[name]) for name in STAT_NAMES]),
        ("published mspn_4stage", [shown(published[name]) for name in STAT_NAMES]),
        ("difference", [shown(diffs[name], signed=True) for name in STAT_NAMES]),
    ]
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("", no_wrap=True)
    if console_err.width >= 110:
        for label in STAT_LABELS:
            table.add_column(label, justify="right", no_wrap=True)
        for name, values in rows:
            table.add_row(name, *values)
    else:
        for name, _ in rows:
            table.add_column(name, justify="right", no_wrap=True)
        for index, label in enumerate(STAT_LABELS):
            table.add_row(label, *(values[index] for _, values in rows))
    console_err.print(table)


def print_detection_counts(selection: DetectionSelection, source: str) -> None:
    dropped = selection.dropped_not_person + selection.dropped_unknown_image
    detail = (
        f" ({selection.dropped_not_person} not person, {selection.dropped_unknown_image} on images not in the annotations)"
        if dropped else ""
    )
    zero = (
        f"; {selection.zero_size} person box(es) of width or height 0 kept, as the official test keeps them"
        if selection.zero_size else ""
    )
    console_err.print(f"{source}: {selection.used} of {selection.total} detection(s) used, {dropped} dropped{detail}{zero}",
                      soft_wrap=True)


def report_missing(missing: List[Tuple[int, str]]) -> None:
    if missing:
        first = missing[0][1]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        warn(f"{len(missing)} image(s) missing or unreadable were skipped: {first}{more}")


def _write_log(path: Path, text: str, verbose: bool) -> Optional[Path]:
    if verbose:
        console_err.print(text.rstrip(), markup=False, highlight=False)
    try:
        path.write_text(text)
        return path
    except OSError as exc:
        warn(f"cannot write evaluation log {path}: {exc.strerror}")
        return None


def finish(
    report: EvalReport,
    *,
    results: Path,
    ann_path: Path,
    summary: Optional[Path],
    settings: Dict[str, Any],
    counts: Dict[str, Any],
    verbose: bool,
    quiet: bool,
    missing: List[Tuple[int, str]],
) -> None:
    """Log, empty-result note, table, summary, missing-image note and exit code."""
    from mspn_cli.evaluation.summary import build_summary
    from mspn_cli.io.writers import write_json_atomic

    log = _write_log(eval_log_path(results), report.log, verbose)
    if report.num_results == 0:
        warn(f"{results} holds no keypoint results: every stat is 0")
    if not quiet:
        print_stats_table(report, f"COCO keypoints, {report.num_images} images, {report.num_results} instances")
    if summary is not None:
        write_json_atomic(
            summary,
            build_summary(report, settings, counts, results_path=results, annotations_path=ann_path, log_path=log),
            indent=2,
        )
        if not quiet:
            console_err.print(f"summary written to {summary}")
    report_missing(missing)
    raise typer.Exit(EXIT_PARTIAL if missing else EXIT_OK)
