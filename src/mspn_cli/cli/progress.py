"""Progress shown by the CLI for long library operations (the library only calls back)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from mspn_cli.weights.download import DownloadProgress, format_size


class RichDownloadProgress(DownloadProgress):
    """A Rich bar on stderr when it is a terminal; one plain line otherwise (logs, CI)."""

    def __init__(self) -> None:
        self._progress = None
        self._task = None

    def start(self, url: str, destination: Path, total_bytes: Optional[int]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        console = Console(stderr=True, highlight=False)
        size = f" ({format_size(total_bytes)})" if total_bytes else ""
        console.print(f"downloading {url}{size} to {destination}", markup=False, soft_wrap=True)
        if console.is_terminal:
            # transient: the finished bar disappears and leaves stderr readable
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(destination.name, total=total_bytes)

    def advance(self, num_bytes: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, num_bytes)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def download_progress(quiet: bool) -> Optional[DownloadProgress]:
    """What the CLI passes as a download's `progress`: nothing when --quiet."""
    return None if quiet else RichDownloadProgress()
