"""Helpers shared by the subcommands: stderr console, error mapping, option parsing."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from mspn_cli.errors import EXIT_INTERRUPTED, MspnError

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
        except KeyboardInterrupt:
            fail("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # `mspn ... --json - | head`: the reader went away; not our error.
            _quiet_stdout()
            raise typer.Exit(0) from None
        except MemoryError:
            fail("out of memory; try a smaller --batch-size or --det-size")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _quiet_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
