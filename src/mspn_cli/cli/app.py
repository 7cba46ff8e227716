"""Typer application, global options, and the mapping of errors to exit codes."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import List, Optional

import typer
import typer.core

from mspn_cli import __version__

EXIT_CODES_HELP = (
    "Exit codes: 0 all inputs processed; 1 some inputs failed, the rest were processed; "
    "2 usage error; 3 input error (nothing could be processed); 4 weights or model unavailable; "
    "5 invalid config; 6 doctor found a missing or incompatible requirement; "
    "70 internal error (a bug, or a graph the exporter cannot convert; MSPN_DEBUG=1 shows the traceback); "
    "130 interrupted (Ctrl-C), 143 stopped by SIGTERM, 129 by SIGHUP, each after flushing finished results."
)

app = typer.Typer(
    name="mspn",
    help="Multi-person 2D human pose estimation: RetinaNet finds people, MSPN (4-stage) "
    "estimates their 17 COCO keypoints. Outputs COCO-format JSON and annotated images.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)

# Subcommand modules register themselves on `app` when imported.
_COMMAND_MODULES = (
    "mspn_cli.cli.keypoints_cmd",
    "mspn_cli.cli.detect_cmd",
    "mspn_cli.cli.visualize_cmd",
    "mspn_cli.cli.eval_cmd",
    "mspn_cli.cli.merge_cmd",
    "mspn_cli.cli.weights_cmd",
    "mspn_cli.cli.weights_add_cmd",
    "mspn_cli.cli.export_cmd",
    "mspn_cli.cli.doctor_cmd",
    "mspn_cli.cli.track_cmd",
)

for _module in _COMMAND_MODULES:
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as exc:  # a command not built yet must not break the others
        if exc.name != _module:
            raise


def _use_panelled_commands(typer_app: typer.Typer) -> None:
    """Every command groups the options of its --help in panels (cli/help_panels.py)."""
    from mspn_cli.cli.help_panels import PanelledCommand

    for info in typer_app.registered_commands:
        if info.cls is None or info.cls is typer.core.TyperCommand:
            info.cls = PanelledCommand
    for group in typer_app.registered_groups:
        _use_panelled_commands(group.typer_instance)


_use_panelled_commands(app)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mspn-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log lines on stderr (-v info, -vv debug); also accepted after the command."),
    log_file: Optional[Path] = typer.Option(None, "--log-file", help="Also append debug-level logs to this file."),
) -> None:
    """Multi-person pose estimation (RetinaNet + MSPN on MegEngine)."""
    _configure_logging(verbose, log_file)


def _configure_logging(verbose: int, log_file: Optional[Path]) -> None:
    from rich.logging import RichHandler

    from mspn_cli.cli.common import console_err
    from mspn_cli.errors import OutputError

    logger = logging.getLogger("mspn_cli")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    console_level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = RichHandler(console=console_err, show_path=False, show_time=verbose > 1, markup=False)
    handler.setLevel(console_level)
    logger.addHandler(handler)
    if log_file is not None:
        try:
            file_handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            from mspn_cli.cli.common import fail

            fail(str(OutputError(f"cannot open log file {log_file}: {exc.strerror}")))
            raise typer.Exit(OutputError.exit_code) from None
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        file_handler.setLevel(logging.DEBUG)
        logger.addHandler(file_handler)


_VERBOSE_FLAGS = ("--verbose", "-v", "-vv", "-vvv")
_ROOT_OPTIONS_WITH_VALUE = ("--log-file",)


def verbose_flags_first(argv: List[str]) -> List[str]:
    """`mspn keypoints x.jpg -v` as `mspn -v keypoints x.jpg`: -v is the app's option, and a
    user puts it where the other options go. Only the exact flags move, and none after `--`."""
    end = argv.index("--") if "--" in argv else len(argv)
    command_at, index = None, 0
    while index < end and command_at is None:
        if argv[index] in _ROOT_OPTIONS_WITH_VALUE:
            index += 2
            continue
        if not argv[index].startswith("-"):
            command_at = index
        index += 1
    if command_at is None:
        return list(argv)
    moved = [arg for arg in argv[command_at + 1:end] if arg in _VERBOSE_FLAGS]
    rest = [arg for arg in argv[command_at + 1:end] if arg not in _VERBOSE_FLAGS]
    return [*argv[:command_at], *moved, argv[command_at], *rest, *argv[end:]]


def main() -> None:
    import sys

    from mspn_cli.cli.common import install_stop_signals

    install_stop_signals()
    app(args=verbose_flags_first(sys.argv[1:]))
