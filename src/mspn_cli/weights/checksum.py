"""sha256 of weight (and graph) files, and an index that spares re-hashing unchanged files.

Hashing MSPN's 283 MB weights costs about a second, which every run would pay just to
name the weights in the graph-cache key. The index in `<MSPN_HOME>/sha256-index.json`
remembers each file's digest together with its resolved path, size, mtime_ns and
inode; any change to one of those (a file replaced in place, rewritten, touched)
makes the next lookup hash the file again. `mspn doctor` and `mspn weights verify`
call `sha256_file` and always hash for real.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Dict, Optional, Union

from mspn_cli.config import WeightsConfig
from mspn_cli.errors import MspnError, WeightsError

log = logging.getLogger(__name__)

_CHUNK_SIZE = 1 << 20
INDEX_FILE_NAME = "sha256-index.json"
# File systems keep mtimes in ticks (a few ms, 2 s on FAT): a file rewritten within the
# tick it was hashed in keeps its mtime. A digest is trusted only when the file had not
# changed for this long before it was hashed (git's "racy" rule), else it is hashed again.
RACY_WINDOW_NS = 2_000_000_000

PathLike = Union[str, "os.PathLike[str]"]


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK_SIZE), b""):
                digest.update(chunk)
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def sha256_prefix_matches(sha256: str, wcfg: WeightsConfig) -> Optional[bool]:
    """Whether `sha256` starts with `wcfg.sha256_prefix`; None when no prefix is recorded.

    Informational only: MegEngine never checks these file-name digits (see weights.store).
    """
    if not wcfg.sha256_prefix:
        return None
    return sha256.lower().startswith(wcfg.sha256_prefix.lower())


def file_identity(path: Path) -> Dict[str, Union[str, int]]:
    """What must stay the same for a recorded digest to still describe the file."""
    resolved = path.resolve()
    stat = resolved.stat()
    return {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}


class DigestIndex:
    """sha256 digests of files, keyed by their identity; kept in a small JSON file.

    `directory` None means no index at all (every lookup hashes). A damaged or unreadable
    index is ignored and rewritten; failing to write it only costs a re-hash next time.
    """

    def __init__(self, directory: Optional[Path]):
        self.path = Path(directory) / INDEX_FILE_NAME if directory is not None else None

    def _read(self) -> Dict[str, dict]:
        if self.path is None:
            return {}
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}

    def sha256(self, path: PathLike) -> str:
        """The file's sha256, from the index when its identity is unchanged, else hashed now."""
        try:
            identity = file_identity(Path(path))
        except OSError as exc:
            raise WeightsError(f"cannot read weights file {path}: {exc.strerror or exc}") from None
        entries = self._read()
        recorded = entries.get(identity["path"])
        if isinstance(recorded, dict) and all(recorded.get(k) == v for k, v in identity.items()):
            digest = recorded.get("sha256")
            hashed_at = recorded.get("hashed_at_ns")
            settled = isinstance(hashed_at, int) and hashed_at - int(identity["mtime_ns"]) > RACY_WINDOW_NS
            if settled and isinstance(digest, str) and len(digest) == 64:
                return digest
        hashed_at = time.time_ns()
        digest = sha256_file(identity["path"])
        self._record(entries, dict(identity, sha256=digest, hashed_at_ns=hashed_at))
        return digest

    def _record(self, entries: Dict[str, dict], entry: dict) -> None:
        if self.path is None:
            return
        from mspn_cli.io.writers import atomic_write

        # Entries for files that no longer exist are dropped, so the index stays small.
        kept = {key: value for key, value in entries.items() if os.path.exists(key)}
        kept[entry["path"]] = entry
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.path) as handle:
                json.dump(kept, handle, indent=1, sort_keys=True)
        except (OSError, MspnError) as exc:
            log.debug("cannot update the digest index %s: %s", self.path, exc)


def pinned_sha256_mismatch(path: PathLike, digest: str, wcfg: WeightsConfig) -> Optional[str]:
    """The one line saying `path` is not the file the config pins, or None (it is, or nothing is pinned)."""
    expected = (wcfg.sha256 or "").strip().lower()
    if not expected or digest.lower() == expected:
        return None
    return (f"checksum mismatch: weights file {path} has sha256 {digest[:12]}…, the config pins {expected[:12]}…; "
            "use the pinned file or change the config's sha256")


def check_pinned_sha256(path: PathLike, digest: str, wcfg: WeightsConfig) -> None:
    """Refuse (WeightsError, exit 4) a file whose sha256 is not the one `wcfg` pins."""
    problem = pinned_sha256_mismatch(path, digest, wcfg)
    if problem is not None:
        raise WeightsError(problem)


def verified_sha256(path: PathLike, wcfg: WeightsConfig) -> str:
    """sha256 of the file a run loads (through the index: hashed once per identity), checked against the pin.

    Whatever the file is (downloaded, placed by hand, `--weights PATH`), a config that
    pins a `sha256` accepts only that file.
    """
    digest = indexed_sha256(path)
    check_pinned_sha256(path, digest, wcfg)
    return digest


def indexed_sha256(path: PathLike) -> str:
    """sha256 of `path` through the index in the usable cache folder (hashing only on change)."""
    from mspn_cli.weights.store import usable_cache_root

    return DigestIndex(usable_cache_root()).sha256(path)
