"""Where weights live: the cache folder ($MSPN_HOME), and turning a `--weights` value into a file.

Checksums. The configs may pin a full `sha256`; it is enforced on download, on every
file a run loads (weights.checksum.verified_sha256: downloaded, placed by hand or
`--weights PATH`), by `mspn weights verify` and by `mspn doctor`. Some official
file names end in eight hex digits (`..._8eaec532.pkl`) that the configs record as
`sha256_prefix`. MegEngine itself never checks them: both 0.x (`utils/http_download.py`,
which only computes an md5 it does not compare) and 1.13
(`hub.load_serialized_obj_from_url`, whose only sha256 is of the URL, used as a
cache-name prefix) download without any content check. As nothing says which hash
those digits are, the prefix is informational only: `verify` reports whether it
matches, and nothing is rejected because of it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from mspn_cli.config import WeightsConfig, load_detector_config, load_pose_config
from mspn_cli.errors import WeightsError
from mspn_cli.weights.download import DEFAULT_TIMEOUT, DownloadProgress, DownloadUnavailable, download_file

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------- locations


def mspn_home() -> Path:
    """Root of the package's cache: $MSPN_HOME, else ~/.cache/mspn-cli."""
    configured = os.environ.get("MSPN_HOME")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "mspn-cli"


def weights_dir() -> Path:
    return mspn_home() / "weights"


def cached_path(wcfg: WeightsConfig) -> Path:
    """Where the official file of `wcfg` lives in the cache (whether or not it is there)."""
    return weights_dir() / wcfg.filename


def known_weights() -> List[Tuple[str, WeightsConfig]]:
    """(model name, weights config) of the two packaged default configs."""
    pose = load_pose_config()
    detector = load_detector_config()
    return [(pose.model.name, pose.weights), (detector.model.name, detector.weights)]


# --------------------------------------------------------------------------- resolving


def _is_url(spec: str) -> bool:
    return "://" in spec


def _url_basename(url: str) -> str:
    return os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))


def _local_file(path: Path) -> Path:
    path = path.expanduser()
    if path.is_dir():
        raise WeightsError(f"weights file not found: {path} is a directory")
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    return path


def resolve_weights(
    spec: Optional[PathLike],
    wcfg: WeightsConfig,
    *,
    download: bool = True,
    progress: Optional[DownloadProgress] = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Turn a `--weights` value into an existing local file, downloading if needed.

    spec: None (the official URL of `wcfg`, cached as <home>/weights/<wcfg.filename>), a
    local path, a file:// URL, or an http(s):// URL (cached under its basename). A file
    already in the cache is used without touching the network. `wcfg.sha256`, when set,
    is enforced only when downloading `wcfg.url` itself: another URL is another file.
    `progress` receives the download's progress (see weights.download).
    """
    if spec is not None and not isinstance(spec, str):
        return _local_file(Path(spec))
    if not spec or spec == wcfg.url:
        return _fetch_into_cache(wcfg.url, cached_path(wcfg), wcfg.sha256, download, progress, timeout, wcfg)
    if not _is_url(spec):
        return _local_file(Path(spec))
    parsed = urllib.parse.urlparse(spec)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        return _local_file(Path(urllib.request.url2pathname(parsed.path)))
    if scheme not in ("http", "https"):
        raise WeightsError(f"unsupported weights URL {spec}: use http(s)://, file:// or a local path")
    name = _url_basename(spec)
    if not name:
        raise WeightsError(f"weights URL {spec} does not end in a file name")
    return _fetch_into_cache(spec, weights_dir() / name, "", download, progress, timeout)


def missing_weight_files(also: Optional[WeightsConfig] = None) -> List[str]:
    """File names of the packaged models' weights (and of `also`) that are not in the cache."""
    configs = ([also] if also is not None else []) + [wcfg for _, wcfg in known_weights()]  # the one asked for first
    names: List[str] = []
    for wcfg in configs:
        if wcfg.filename not in names and not cached_path(wcfg).is_file():
            names.append(wcfg.filename)
    return names


def offline_message(reason: str, wcfg: WeightsConfig) -> str:
    """One line for a run that needs weights it cannot download: every missing file, and the fix."""
    missing = missing_weight_files(wcfg)
    return (f"cannot download {wcfg.url} ({reason}); missing from {weights_dir()}: {', '.join(missing)}. "
            "On a machine that has them, fetch each (`mspn weights list` shows the URLs), then run "
            "`mspn weights add FILE` for each here, or pass --weights PATH")


def _fetch_into_cache(
    url: str,
    destination: Path,
    expected_sha256: str,
    download: bool,
    progress: Optional[DownloadProgress],
    timeout: float,
    wcfg: Optional[WeightsConfig] = None,
) -> Path:
    if destination.is_file():
        return destination
    if not download:
        if wcfg is not None:
            raise WeightsError(offline_message("downloads are off", wcfg))
        raise WeightsError(f"weights are not in the cache: {destination}; run `mspn weights add FILE` with the file "
                           f"from {url}, or pass --weights PATH")
    try:
        return download_file(url, destination, expected_sha256=expected_sha256, progress=progress, timeout=timeout)
    except DownloadUnavailable as exc:
        if wcfg is None:  # a URL of the user's own: the message names it
            raise
        raise WeightsError(offline_message(exc.reason, wcfg)) from None


# --------------------------------------------------------------------------- a cache folder that works

# mspn_home() value -> the folder caches really use there (None: no cache at all).
_USABLE_ROOTS: Dict[str, Optional[Path]] = {}


def _unusable_reason(folder: Path) -> Optional[str]:
    """Why files cannot be created in `folder` (created if missing), or None when they can."""
    if folder.exists() and not folder.is_dir():
        return "it is not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".mspn-probe-", dir=folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(probe)
    return None


def _private_temp_root() -> Path:
    return Path(tempfile.gettempdir()) / f"mspn-cli-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def _usable_private_temp_root() -> Optional[Path]:
    """A per-user folder in the system temp dir, refused when another user owns it."""
    folder = _private_temp_root()
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        if hasattr(os, "getuid") and folder.stat().st_uid != os.getuid():
            return None
    except OSError:
        return None
    return folder if _unusable_reason(folder) is None else None


def usable_cache_root() -> Optional[Path]:
    """$MSPN_HOME when files can be written there; otherwise a per-user temp folder, or None.

    The first fallback in a process logs one warning naming the folder and the reason,
    so an unusable $MSPN_HOME never silently makes every run export its graphs again.
    """
    home = mspn_home()
    key = str(home)
    if key in _USABLE_ROOTS:
        return _USABLE_ROOTS[key]
    reason = _unusable_reason(home)
    if reason is None:
        root: Optional[Path] = home
    else:
        root = _usable_private_temp_root()
        where = f"using {root} instead" if root is not None else "running without a cache"
        log.warning("cache folder %s (MSPN_HOME) is unusable (%s); %s", home, reason, where)
    _USABLE_ROOTS[key] = root
    return root
