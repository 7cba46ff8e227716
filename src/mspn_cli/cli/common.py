"""Helpers shared by the subcommands: stderr console, error mapping, option parsing."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from mspn_cli.errors import EXIT_INTERNAL, Interrupted, MspnError, interrupt_exit_code

# Everything human-readable goes to stderr so stdout stays clean for JSON.
console_err = Console(stderr=True, highlight=False, no_color=True if os.environ.get("NO_COLOR") else None)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> None:
    """Print one error line to stderr (the message is not read as Rich markup)."""
    console_err.print(f"[bold red]error:[/bold red] {escape(str(message))}", soft_wrap=True)


def warn(message: str) -> None:
    console_err.print(f"[yellow]warning:[/yellow] {escape(str(message))}", soft_wrap=True)


def guarded(command: F) -> F:
    """Map the package's errors to one stderr line and the documented exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except MspnError as exc:
            fail(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            fail("interrupted")
            raise typer.Exit(interrupt_exit_code(exc)) from None
        except BrokenPipeError:
            # `mspn ... --json - | head`: the reader went away; not our error.
            _quiet_stdout()
            raise typer.Exit(0) from None
        except MemoryError:
            fail("out of memory; try a smaller --batch-size or --det-size")
            raise typer.Exit(1) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - last resort: one line, not a traceback
            if os.environ.get("MSPN_DEBUG"):  # the traceback for the report, and still exit 70
                import traceback

                traceback.print_exc()
            fail(f"internal error ({type(exc).__name__}: {exc}); set MSPN_DEBUG=1 for a traceback and please report it")
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper  # type: ignore[return-value]


def _quiet_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


# ---------------------------------------------------------------------------
# Batch bookkeeping and progress shared by the image-processing commands.

import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import List, Optional, Tuple  # noqa: E402

from mspn_cli.errors import EXIT_OK, EXIT_PARTIAL, InputError  # noqa: E402


class FailFast(InputError):
    """--fail-fast at a bad input: the run stops in order (finished results kept), then exits 3."""


@dataclass
class BatchReport:
    """What a batch run did: counts, failures (path, reason), wall time."""

    images: int = 0
    persons: int = 0
    failures: List[Tuple[str, str]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)  # not failures: said once, after the summary
    precision: Optional[str] = None  # what the networks computed in, as their backends read it back
    started: float = field(default_factory=time.perf_counter)

    def fail(self, path: str, reason: str) -> None:
        self.failures.append((str(path), reason))

    def input_failed(self, path, reason, fail_fast: bool) -> None:
        """Record a bad input (`reason`: text or the exception), or stop the run with --fail-fast."""
        if isinstance(reason, BaseException) and not isinstance(reason, MspnError):
            reason = f"cannot read image: {reason}"
        reason = str(reason)
        reason = reason if reason.startswith(str(path)) else f"{path}: {reason}"
        if fail_fast:
            raise FailFast(reason)
        self.fail(str(path), reason)

    def note_skipped(self, skipped) -> None:
        """Say which files of the input folders were left out because their format cannot be read."""
        if skipped:
            names = ", ".join(str(path) for path in list(skipped)[:5]) + (", ..." if len(skipped) > 5 else "")
            self.notes.append(f"skipped {len(skipped)} file(s) in formats mspn cannot read (GIF, AVIF, HEIC, ...): {names}")

    def exit_code(self) -> int:
        if not self.failures:
            return EXIT_OK
        return EXIT_PARTIAL if self.images else InputError.exit_code

    def precision_text(self) -> str:
        return f", precision {self.precision}" if self.precision else ""

    def print_summary(self, quiet: bool, noun: str = "persons") -> None:
        elapsed = time.perf_counter() - self.started
        if not quiet:
            rate = self.images / elapsed if elapsed > 0 else 0.0
            console_err.print(
                f"[green]done:[/green] {self.images} image(s), {self.persons} {noun}, "
                f"{len(self.failures)} failed, {elapsed:.1f} s ({rate:.2f} images/s)" + self.precision_text()
            )
        for note in self.notes:
            warn(note)
        for path, reason in self.failures:
            fail(f"{path}: {reason}" if not reason.startswith(path) else reason)


def make_progress(total: Optional[int], quiet: bool, description: str):
    """A Rich progress bar on stderr, only when stderr is a terminal and not --quiet."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    enabled = not quiet and console_err.is_terminal
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console_err,
        disable=not enabled,
        transient=False,
    )
    task = progress.add_task(description, total=total)
    return progress, task


def install_stop_signals() -> None:
    """SIGTERM and SIGHUP stop a run as Ctrl-C does: finished work is kept, temp files removed.

    Slurm, Kubernetes, `timeout` and systemd stop jobs with SIGTERM, not SIGINT.
    """
    import signal

    def stop(signum, _frame):
        raise Interrupted(signum)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)


def report_interrupted(exc: BaseException, finished: int, noun: str = "image(s)") -> None:
    """The one line after an orderly stop; the caller exits with interrupt_exit_code(exc)."""
    console_err.print(f"[yellow]interrupted[/yellow] after {finished} {noun}; finished results were written")
