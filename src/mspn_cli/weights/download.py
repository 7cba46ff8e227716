"""Downloading a weights file atomically, verified, reporting progress to a callback.

Library code shows nothing itself: a caller that wants a progress bar passes a
`DownloadProgress` (the CLI's draws with Rich); `LoggedProgress` logs one line.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Union

from mspn_cli import __version__
from mspn_cli.errors import OutputError, WeightsError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0  # seconds without progress on connect or read, not for the whole download
_CHUNK_SIZE = 1 << 20


class DownloadProgress:
    """Told about a download as it goes; the default does nothing."""

    def start(self, url: str, destination: Path, total_bytes: Optional[int]) -> None:
        """The response arrived; `total_bytes` is None when the server does not say."""

    def advance(self, num_bytes: int) -> None:
        """`num_bytes` more were received."""

    def finish(self) -> None:
        """The download ended (complete or not)."""


class LoggedProgress(DownloadProgress):
    """One WARNING line when a download starts, so users see why a run waits without -v."""

    def start(self, url: str, destination: Path, total_bytes: Optional[int]) -> None:
        size = f" ({format_size(total_bytes)})" if total_bytes else ""
        log.warning("downloading %s%s to %s", url, size, destination)


def format_size(num_bytes: int) -> str:
    size = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover - the loop always returns


class DownloadUnavailable(WeightsError):
    """The server could not be reached or refused the file (offline, DNS, HTTP error): nothing was written."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _offline_error(url: str, reason: str, destination: Path) -> WeightsError:
    return DownloadUnavailable(
        f"cannot download {url} ({reason}); download it elsewhere and place it at {destination}, "
        f"or pass --weights PATH",
        reason,
    )


def _reason(exc: BaseException, timeout: float) -> str:
    """A short human reason for a failed request ("HTTP 404 Not Found", "Connection refused")."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        inner = exc.reason
        return _reason(inner, timeout) if isinstance(inner, BaseException) else str(inner)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"no response for {timeout:g} s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def download_file(
    url: str,
    destination: Union[str, Path],
    *,
    expected_sha256: str = "",
    progress: Optional[DownloadProgress] = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Download `url` to `destination` atomically; return the destination.

    The bytes go to a temporary file next to the destination (io.writers.atomic_write)
    and are moved into place only once complete (Content-Length matched) and, when
    `expected_sha256` is given, verified. On any failure nothing is left behind.
    """
    from mspn_cli.io.writers import atomic_write

    destination = Path(destination)
    progress = progress or DownloadProgress()
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the weights folder {destination.parent}: {exc.strerror or exc}") from None

    request = urllib.request.Request(url, headers={"User-Agent": f"mspn-cli/{__version__}"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise _offline_error(url, _reason(exc, timeout), destination) from None

    try:
        with response, atomic_write(destination, "wb") as sink:
            length_header = response.headers.get("Content-Length")
            expected_size = int(length_header) if length_header and length_header.isdigit() else None
            progress.start(url, destination, expected_size)
            try:
                digest, received = _stream(response, sink, url, destination, progress, timeout)
            finally:
                progress.finish()
            if expected_size is not None and received != expected_size:
                raise WeightsError(
                    f"download of {url} was truncated ({received} of {expected_size} bytes); nothing was kept. "
                    f"Retry, or download it elsewhere and place it at {destination}"
                )
            actual_sha256 = digest.hexdigest()
            if expected_sha256 and actual_sha256 != expected_sha256.lower():
                raise WeightsError(
                    f"checksum mismatch for {url}: expected sha256 {expected_sha256.lower()}, got {actual_sha256}; "
                    f"the download was discarded"
                )
    except OutputError as exc:  # the temporary file could not be created
        raise WeightsError(str(exc)) from None
    except OSError as exc:
        raise WeightsError(f"cannot write {destination}: {exc.strerror or exc}") from None
    return destination


def _stream(response, sink, url: str, destination: Path, progress: DownloadProgress, timeout: float):
    digest = hashlib.sha256()
    received = 0
    while True:
        try:
            chunk = response.read(_CHUNK_SIZE)
        except http.client.IncompleteRead as exc:
            # Chunked transfers that stop early land here; the caller reports the truncation.
            chunk = exc.partial
            digest.update(chunk)
            sink.write(chunk)
            received += len(chunk)
            break
        except (OSError, http.client.HTTPException) as exc:
            raise _offline_error(url, _reason(exc, timeout), destination) from None
        if not chunk:
            break
        digest.update(chunk)
        sink.write(chunk)
        received += len(chunk)
        progress.advance(len(chunk))
    return digest, received
