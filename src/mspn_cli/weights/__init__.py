"""The weights room: where weight files live, downloading, checksums, safe unpickling, strict loading.

    store      $MSPN_HOME, the cache folder that works, `--weights` value -> local file
    download   atomic, verified download with a progress callback
    checksum   sha256, and the index that spares re-hashing unchanged files
    unpickle   the restricted unpickler (numpy arrays in plain containers only)
    loading    strict state-dict loading into a network (legacy layouts tolerated)
"""

from mspn_cli.weights.checksum import DigestIndex, indexed_sha256, sha256_file, sha256_prefix_matches
from mspn_cli.weights.download import DEFAULT_TIMEOUT, DownloadProgress, LoggedProgress, download_file, format_size
from mspn_cli.weights.loading import load_weights_into
from mspn_cli.weights.store import (
    cached_path,
    known_weights,
    mspn_home,
    resolve_weights,
    usable_cache_root,
    weights_dir,
)
from mspn_cli.weights.unpickle import load_checkpoint, save_state_dict

__all__ = [
    "DEFAULT_TIMEOUT",
    "DigestIndex",
    "DownloadProgress",
    "LoggedProgress",
    "cached_path",
    "download_file",
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
