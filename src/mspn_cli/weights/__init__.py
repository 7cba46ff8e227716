"""The weights room: where weight files live, downloading, checksums, safe unpickling, strict loading.

    store      $MSPN_HOME, the cache folder that works, `--weights` value -> local file
    download   atomic, verified download with a progress callback
    checksum   sha256, and the index that spares re-hashing unchanged files
    unpickle   the restricted unpickler (numpy arrays in plain containers only)
    loading    strict state-dict loading into a network or against its manifest (legacy layouts tolerated)
    manifest   the packaged state-dict manifests (key, shape, dtype of every tensor)
"""

from mspn_cli.weights.checksum import DigestIndex, indexed_sha256, sha256_file, sha256_prefix_matches
from mspn_cli.weights.download import DEFAULT_TIMEOUT, DownloadProgress, LoggedProgress, download_file, format_size
from mspn_cli.weights.store import (
    cached_path,
    known_weights,
    mspn_home,
    resolve_weights,
    usable_cache_root,
    weights_dir,
)

# loading and unpickle need numpy; they load on first use so that `mspn --help` and the
# weights commands that only look at files do not pay for it.
_NEEDS_NUMPY = {"load_weights_into": "loading", "fit_to_manifest": "loading", "load_checkpoint": "unpickle", "save_state_dict": "unpickle"}


def __getattr__(name):
    if name in _NEEDS_NUMPY:
        import importlib

        return getattr(importlib.import_module(f"mspn_cli.weights.{_NEEDS_NUMPY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_TIMEOUT",
    "DigestIndex",
    "DownloadProgress",
    "LoggedProgress",
    "cached_path",
    "download_file",
    "fit_to_manifest",
    "format_size",
    "indexed_sha256",
    "known_weights",
    "load_checkpoint",
    "load_weights_into",
    "mspn_home",
    "resolve_weights",
    "save_state_dict",
    "sha256_file",
    "sha256_prefix_matches",
    "usable_cache_root",
    "weights_dir",
]
