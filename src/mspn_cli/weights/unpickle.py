"""Reading weight files safely: a restricted unpickler, and writing state dicts back.

Weight files are pickles, and a pickle can run arbitrary code. Official files
(MegEngine 0.x `mge.save`, and 1.13 `mge.save(model.state_dict())`) only reference
numpy's array reconstruction helpers and `collections.OrderedDict`, so the unpickler
below resolves exactly those and refuses every other global.
"""

from __future__ import annotations

import builtins
import importlib
import os
import pickle
import struct
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from mspn_cli.errors import OutputError, WeightsError, unreadable_reason

PathLike = Union[str, "os.PathLike[str]"]


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
    except OSError as exc:
        raise WeightsError(f"weights file {source}: {unreadable_reason(exc)}") from None
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
    from mspn_cli.io.writers import atomic_write

    path = Path(path)
    arrays = OrderedDict((str(key), np.asarray(_to_numpy(value))) for key, value in state.items())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as handle:
            pickle.dump(arrays, handle, protocol=4)
    except OutputError as exc:
        raise WeightsError(str(exc)) from None
    except OSError as exc:
        raise WeightsError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _to_numpy(value: Any) -> Any:
    # MegEngine tensors (state_dict(keep_var=True)) expose .numpy(); arrays pass through.
    return value.numpy() if hasattr(value, "numpy") and not isinstance(value, np.ndarray) else value
