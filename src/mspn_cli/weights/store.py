"""The weights store: finding, downloading, verifying, unpickling and loading weight files.

Networks are built elsewhere; `load_weights_into` receives a ready model object.

Checksums. The configs may pin a full `sha256`; it is enforced on download and by
`mspn weights verify`, but a file already in the cache is trusted as is (hashing 283 MB
on every run would cost about a second). Some official file names end in eight hex
digits (`..._8eaec532.pkl`) that the configs record as `sha256_prefix`. MegEngine itself
never checks them: both 0.x (`utils/http_download.py`, which only computes an md5 it
does not compare) and 1.13 (`hub.load_serialized_obj_from_url`, whose only sha256 is of
the URL, used as a cache-name prefix) download without any content check. As nothing
says which hash those digits are, the prefix is informational only: `verify` reports
whether it matches, and nothing is rejected because of it.

Unpickling. Weight files are pickles, and a pickle can run arbitrary code. Official
files (MegEngine 0.x `mge.save`, and 1.13 `mge.save(model.state_dict())`) only reference
numpy's array reconstruction helpers and `collections.OrderedDict`, so the unpickler
below resolves exactly those and refuses every other global.
"""

from __future__ import annotations

import builtins
import hashlib
import http.client
import importlib
import os
import pickle
import socket
import struct
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, List, Mapping, Optional, Tuple, Union

import numpy as np

from mspn_cli import __version__
from mspn_cli.config import WeightsConfig, load_detector_config, load_pose_config
from mspn_cli.errors import WeightsError

DEFAULT_TIMEOUT = 30.0  # seconds without progress on connect or read, not for the whole download
_CHUNK_SIZE = 1 << 20
_NAMES_SHOWN = 3  # keys named per category in a "do not fit" message

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


def weights_config_for(model_name: str) -> WeightsConfig:
    for name, wcfg in known_weights():
        if name == model_name:
            return wcfg
    known = ", ".join(name for name, _ in known_weights())
    raise WeightsError(f"no weights are known for model '{model_name}'; known models: {known}")


def format_size(num_bytes: int) -> str:
    size = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover - the loop always returns


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
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Turn a `--weights` value into an existing local file, downloading if needed.

    spec: None (the official URL of `wcfg`, cached as <home>/weights/<wcfg.filename>), a
    local path, a file:// URL, or an http(s):// URL (cached under its basename). A file
    already in the cache is used without touching the network. `wcfg.sha256`, when set,
    is enforced only when downloading `wcfg.url` itself: another URL is another file.
    """
    if spec is not None and not isinstance(spec, str):
        return _local_file(Path(spec))
    if not spec or spec == wcfg.url:
        return _fetch_into_cache(wcfg.url, cached_path(wcfg), wcfg.sha256, download, progress, timeout)
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


def _fetch_into_cache(
    url: str, destination: Path, expected_sha256: str, download: bool, progress: bool, timeout: float
) -> Path:
    if destination.is_file():
        return destination
    if not download:
        raise WeightsError(
            f"weights are not in the cache: {destination}; run `mspn weights download` "
            f"or place the file from {url} there, or pass --weights PATH"
        )
    return download_file(url, destination, expected_sha256=expected_sha256, progress=progress, timeout=timeout)


# --------------------------------------------------------------------------- downloading


def _offline_error(url: str, reason: str, destination: Path) -> WeightsError:
    return WeightsError(
        f"cannot download {url} ({reason}); download it elsewhere and place it at {destination}, "
        f"or pass --weights PATH"
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
    destination: PathLike,
    *,
    expected_sha256: str = "",
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Download `url` to `destination` atomically; return the destination.

    The bytes go to a temporary file next to the destination and are moved into place
    only once complete (Content-Length matched) and, when `expected_sha256` is given,
    verified. On any failure nothing is left behind.
    """
    destination = Path(destination)
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
        fd, temp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    except OSError as exc:
        response.close()
        raise WeightsError(f"cannot write to {destination.parent}: {exc.strerror or exc}") from None
    temp_path = Path(temp_name)
    try:
        with response, os.fdopen(fd, "wb") as sink:
            length_header = response.headers.get("Content-Length")
            expected_size = int(length_header) if length_header and length_header.isdigit() else None
            digest, received = _stream(response, sink, url, destination, expected_size, progress, timeout)
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
        os.replace(temp_path, destination)
    except OSError as exc:
        raise WeightsError(f"cannot write {destination}: {exc.strerror or exc}") from None
    finally:
        # Covers errors and Ctrl-C alike; after os.replace the temporary name is gone.
        if temp_path.exists():
            temp_path.unlink()
    return destination


def _stream(response, sink, url: str, destination: Path, expected_size: Optional[int], progress: bool, timeout: float):
    digest = hashlib.sha256()
    received = 0
    bar = _ProgressBar(url, destination, expected_size) if progress else None
    try:
        while True:
            try:
                chunk = response.read(_CHUNK_SIZE)
            except http.client.IncompleteRead as exc:
                # Chunked transfers that stop early land here; the caller reports the truncation.
                digest.update(exc.partial)
                sink.write(exc.partial)
                received += len(exc.partial)
                break
            except (OSError, http.client.HTTPException) as exc:
                raise _offline_error(url, _reason(exc, timeout), destination) from None
            if not chunk:
                break
            digest.update(chunk)
            sink.write(chunk)
            received += len(chunk)
            if bar is not None:
                bar.advance(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return digest, received


class _ProgressBar:
    """A Rich bar on stderr when it is a terminal; one plain line otherwise (logs, CI)."""

    def __init__(self, url: str, destination: Path, total: Optional[int]):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        console = Console(stderr=True, highlight=False)
        size = f" ({format_size(total)})" if total else ""
        console.print(f"downloading {url}{size} to {destination}", markup=False, soft_wrap=True)
        self._progress = None
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
            self._task = self._progress.add_task(destination.name, total=total)

    def advance(self, num_bytes: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, num_bytes)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


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

    Informational only: MegEngine never checks these file-name digits (module docstring).
    """
    if not wcfg.sha256_prefix:
        return None
    return sha256.lower().startswith(wcfg.sha256_prefix.lower())


# --------------------------------------------------------------------------- unpickling

_HARMLESS_BUILTINS = frozenset(
    {"bool", "int", "float", "complex", "str", "bytes", "bytearray", "tuple", "list", "dict", "set", "frozenset"}
)
# numpy >= 2 pickles name `numpy._core`, older numpy `numpy.core`; both resolve here.
_NUMPY_HELPERS = {
    "multiarray": frozenset({"_reconstruct", "scalar"}),  # arrays (protocol <= 4) and numpy scalars
    "numeric": frozenset({"_frombuffer"}),  # arrays pickled with protocol 5
}
_REFUSAL_HINTS = {
    "megengine": "; MegEngine tensors are not accepted, re-save with mge.save(model.state_dict())",
    "torch": "; PyTorch checkpoints are not MegEngine weights",
}


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for codecs.encode: Python pickles bytes as codecs.encode(str, 'latin1') below protocol 3."""
    if encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"unexpected codec {encoding!r}")
    return text.encode("latin-1", errors)


def _numpy_helper(submodule: str, name: str) -> Any:
    for package in ("numpy._core", "numpy.core"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 deprecates numpy.core
            try:
                module = importlib.import_module(f"{package}.{submodule}")
            except ImportError:
                continue
        if hasattr(module, name):
            return getattr(module, name)
    raise pickle.UnpicklingError(f"this numpy has no {submodule}.{name}")


def _allowed_global(module: str, name: str) -> Optional[Any]:
    if module in ("builtins", "__builtin__") and name in _HARMLESS_BUILTINS:
        return getattr(builtins, name)
    if (module, name) == ("collections", "OrderedDict"):
        return OrderedDict
    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if module in ("_codecs", "codecs") and name == "encode":
        return _latin1_encode
    for package in ("numpy.core.", "numpy._core."):
        if module.startswith(package):
            submodule = module[len(package) :]
            if name in _NUMPY_HELPERS.get(submodule, ()):
                return _numpy_helper(submodule, name)
    return None


class _WeightsUnpickler(pickle.Unpickler):
    """Resolves only what pickled numpy arrays inside plain containers need."""

    def __init__(self, handle, source: str):
        super().__init__(handle)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        resolved = _allowed_global(module, name)
        if resolved is None:
            hint = _REFUSAL_HINTS.get(module.split(".", 1)[0], "")
            raise WeightsError(
                f"refusing to load {self._source}: it references {module}.{name}, which is not allowed "
                f"in a weights file (possible malicious pickle){hint}"
            )
        return resolved

    def persistent_load(self, pid: Any) -> Any:
        # Weights files never use persistent IDs; random bytes can look like one (a PNG
        # header does), so this counts as "not a pickle" rather than as an attack.
        raise pickle.UnpicklingError("unexpected persistent ID")


# What a damaged or non-pickle file makes the unpickler raise (besides WeightsError).
_CORRUPT_PICKLE_ERRORS = (
    EOFError,
    pickle.UnpicklingError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    AttributeError,
    OverflowError,
    struct.error,
    UnicodeDecodeError,
    RecursionError,
)


def load_checkpoint(path: PathLike) -> "OrderedDict[str, np.ndarray]":
    """Unpickle a weights file safely and return its state dict.

    Accepts a plain mapping of names to arrays, or a training checkpoint wrapping one
    as {"state_dict": ..., "epoch": ...} (other keys of the wrapper are ignored).
    """
    source = str(path)
    try:
        with open(path, "rb") as handle:
            obj = _WeightsUnpickler(handle, source).load()
    except WeightsError:
        raise
    except IsADirectoryError:
        raise WeightsError(f"weights file not found: {source} is a directory") from None
    except FileNotFoundError:
        raise WeightsError(f"weights file not found: {source}") from None
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {source}: {exc.strerror or exc}") from None
    except MemoryError:
        raise WeightsError(f"weights file {source} is truncated or not a pickle (it claims too much memory)") from None
    except _CORRUPT_PICKLE_ERRORS:
        raise WeightsError(f"weights file {source} is truncated or not a pickle") from None
    return _as_state_dict(obj, source)


def _as_state_dict(obj: Any, source: str) -> "OrderedDict[str, np.ndarray]":
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        kind = "an empty mapping" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
        raise WeightsError(f"weights file {source} is not a state dict (it holds {kind})")
    state: "OrderedDict[str, np.ndarray]" = OrderedDict()
    for key, value in obj.items():
        if isinstance(value, np.generic):
            value = np.asarray(value)
        if not isinstance(key, str) or not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            what = f"{value.dtype} array" if isinstance(value, np.ndarray) else type(value).__name__
            raise WeightsError(
                f"weights file {source} is not a state dict: entry {key!r} is not a numeric array ({what})"
            )
        state[key] = value
    return state


def save_state_dict(state: Mapping[str, Any], path: PathLike) -> Path:
    """Write `state` as a plain pickle of an OrderedDict of numpy arrays, atomically.

    Protocol 4 keeps the file readable by every Python 3 MegEngine's `mge.load`.
    """
    path = Path(path)
    arrays = OrderedDict((str(key), np.asarray(_to_numpy(value))) for key, value in state.items())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WeightsError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            pickle.dump(arrays, handle, protocol=4)
        os.replace(temp_name, path)
    except OSError as exc:
        raise WeightsError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
    return path


def _to_numpy(value: Any) -> Any:
    # MegEngine tensors (state_dict(keep_var=True)) expose .numpy(); arrays pass through.
    return value.numpy() if hasattr(value, "numpy") and not isinstance(value, np.ndarray) else value


# --------------------------------------------------------------------------- strict loading


def _shape_text(shape: Tuple[int, ...]) -> str:
    return "(" + ",".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _named_list(names: List[str]) -> str:
    shown = ", ".join(names[:_NAMES_SHOWN])
    return shown + (", ..." if len(names) > _NAMES_SHOWN else "")


def _count(items: List[str], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _reshape_rules() -> Tuple[tuple, tuple]:
    """Module classes whose tensors may differ in layout only (reference §6)."""
    from mspn_cli._mge import import_megengine

    M = import_megengine().module
    # The same families MegEngine 1.13's load_state_dict reshapes itself.
    norm_names = ("BatchNorm1d", "BatchNorm2d", "SyncBatchNorm", "GroupNorm", "InstanceNorm", "LayerNorm")
    conv_names = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "ConvTranspose3d")
    norms = tuple(getattr(M, n) for n in norm_names if hasattr(M, n))
    convs = tuple(getattr(M, n) for n in conv_names if hasattr(M, n))
    return norms, convs


def _layout_only_difference(owner: Any, leaf: str, file_shape: tuple, model_shape: tuple, rules) -> bool:
    norms, convs = rules
    if int(np.prod(file_shape)) != int(np.prod(model_shape)):
        return False
    if isinstance(owner, norms):
        return True
    if isinstance(owner, convs) and leaf == "bias":
        channels = int(np.prod(model_shape))
        return {file_shape, model_shape} <= {(channels,), (1, channels, 1, 1)}
    return False


def load_weights_into(
    model: Any, state: Mapping[str, np.ndarray], source: str, *, model_name: Optional[str] = None
) -> None:
    """Load `state` into `model` strictly, or raise one WeightsError describing every misfit.

    Tolerated: BatchNorm (and other norm-layer) tensors and conv biases stored as
    (1,C,1,1) instead of (C,) or the reverse, as MegEngine 0.x files do; float tensors of
    another precision (converted to the model's dtype).
    """
    name = model_name or getattr(model, "name", None) or type(model).__name__
    # The model's own tensors, by state-dict name. Module.state_dict()/load_state_dict()
    # copy every tensor through numpy one by one (about 10 s for MSPN's 1456 entries);
    # reading shapes and resetting tensors in place takes under a second.
    tensors = _named_tensors(model)
    modules = dict(model.named_modules())
    rules = _reshape_rules()
    expected = {key: _ShapeOnly(_state_dict_shape(key, t, modules, rules), np.dtype(t.dtype)) for key, t in tensors.items()}

    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong_shapes: List[str] = []
    fitted: "OrderedDict[str, np.ndarray]" = OrderedDict()
    for key, target in expected.items():
        if key not in state:
            continue
        value = np.asarray(state[key])
        if value.shape != target.shape:
            owner_name, _, leaf = key.rpartition(".")
            if not _layout_only_difference(modules.get(owner_name), leaf, value.shape, target.shape, rules):
                wrong_shapes.append(f"{key}: file {_shape_text(value.shape)} vs model {_shape_text(target.shape)}")
                continue
            value = value.reshape(target.shape)
        if value.dtype != target.dtype:
            if value.dtype.kind not in "biuf":
                wrong_shapes.append(f"{key}: file dtype {value.dtype} vs model {target.dtype}")
                continue
            value = value.astype(target.dtype)
        fitted[key] = value

    if missing or unexpected or wrong_shapes:
        problems = []
        if missing:
            problems.append(f"{_count(missing, 'missing key')} ({_named_list(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected ({_named_list(unexpected)})")
        if wrong_shapes:
            problems.append(f"{_count(wrong_shapes, 'wrong shape')} ({_named_list(wrong_shapes)})")
        message = f"weights {source} do not fit {name}: " + ", ".join(problems)
        if not fitted:
            message += "; these look like weights of a different model"
        raise WeightsError(message)

    from mspn_cli._mge import import_megengine

    mge = import_megengine()
    for key, value in fitted.items():
        tensor = tensors[key]
        value = np.ascontiguousarray(value).reshape(tuple(tensor.shape))
        tensor._reset(mge.tensor(value, dtype=value.dtype, device=tensor.device))


class _ShapeOnly:
    """Shape and dtype of a model tensor, without copying its values out."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape: tuple, dtype: np.dtype):
        self.shape = shape
        self.dtype = dtype


def _state_dict_shape(key: str, tensor: Any, modules: Mapping[str, Any], rules) -> tuple:
    """The shape `state_dict()` reports: MegEngine 1.13 flattens norm-layer tensors to (C,)."""
    shape = tuple(tensor.shape)
    owner = modules.get(key.rpartition(".")[0])
    if isinstance(owner, rules[0]):
        return (int(np.prod(shape)),)
    return shape


def _named_tensors(model: Any) -> "OrderedDict[str, Any]":
    """Parameters and buffers keyed exactly as `state_dict()` names them."""
    tensors: "OrderedDict[str, Any]" = OrderedDict(model.named_parameters())
    tensors.update(model.named_buffers())
    return tensors


def load_pretrained(
    model: Any,
    spec: Optional[PathLike],
    wcfg: WeightsConfig,
    *,
    model_name: Optional[str] = None,
    download: bool = True,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """resolve_weights + load_checkpoint + load_weights_into; returns the file used."""
    path = resolve_weights(spec, wcfg, download=download, progress=progress, timeout=timeout)
    load_weights_into(model, load_checkpoint(path), str(path), model_name=model_name)
    return path
