"""Strict loading of a state dict, tolerating legacy layouts only: into a MegEngine network, or
against the packaged manifest of its network (numpy only, no MegEngine)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, List, Mapping, Optional, Tuple

import numpy as np

from mspn_cli.errors import WeightsError

_NAMES_SHOWN = 3  # keys named per category in a "do not fit" message


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


def _layout_only_difference(kind: Optional[str], leaf: str, file_shape: tuple, model_shape: tuple) -> bool:
    """`kind`: the owning layer's family, "norm", "conv" or None."""
    if int(np.prod(file_shape)) != int(np.prod(model_shape)):
        return False
    if kind == "norm":
        return True
    if kind == "conv" and leaf == "bias":
        channels = int(np.prod(model_shape))
        return {file_shape, model_shape} <= {(channels,), (1, channels, 1, 1)}
    return False


def fit_state(
    expected: Mapping[str, Tuple[tuple, np.dtype]], kinds: Mapping[str, str], state: Mapping[str, np.ndarray],
    source: str, name: str,
) -> "OrderedDict[str, np.ndarray]":
    """`state`'s arrays in `expected`'s order, shapes and dtypes, or one WeightsError naming every misfit.

    Tolerated: BatchNorm (and other norm-layer) tensors and conv biases stored as
    (1,C,1,1) instead of (C,) or the reverse, as MegEngine 0.x files do; float tensors of
    another precision (converted to the network's dtype).
    """
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong_shapes: List[str] = []
    fitted: "OrderedDict[str, np.ndarray]" = OrderedDict()
    for key, (shape, dtype) in expected.items():
        if key not in state:
            continue
        value = np.asarray(state[key])
        if value.shape != shape:
            owner_name, _, leaf = key.rpartition(".")
            if not _layout_only_difference(kinds.get(owner_name), leaf, value.shape, shape):
                wrong_shapes.append(f"{key}: file {_shape_text(value.shape)} vs model {_shape_text(shape)}")
                continue
            value = value.reshape(shape)
        if value.dtype != dtype:
            if value.dtype.kind not in "biuf":
                wrong_shapes.append(f"{key}: file dtype {value.dtype} vs model {dtype}")
                continue
            value = value.astype(dtype)
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
    return fitted


def fit_to_manifest(model_name: str, state: Mapping[str, np.ndarray], source: str) -> "OrderedDict[str, np.ndarray]":
    """Strict loading without a network: `state` checked against the packaged manifest of
    `model_name` (same rules and message as `load_weights_into`), arrays in the manifest's
    order and shapes. Needs numpy only."""
    from mspn_cli.weights.manifest import layer_kinds, manifest

    entries = manifest(model_name)
    expected = OrderedDict((key, (shape, np.dtype(dtype))) for key, (shape, dtype) in entries.items())
    return fit_state(expected, layer_kinds(entries), state, source, model_name)


def load_weights_into(
    model: Any, state: Mapping[str, np.ndarray], source: str, *, model_name: Optional[str] = None
) -> None:
    """Load `state` into the MegEngine `model` strictly, or raise one WeightsError describing
    every misfit (the rules of `fit_state`)."""
    name = model_name or getattr(model, "name", None) or type(model).__name__
    # The model's own tensors, by state-dict name. Module.state_dict()/load_state_dict()
    # copy every tensor through numpy one by one (about 10 s for MSPN's 1456 entries);
    # reading shapes and resetting tensors in place takes under a second.
    tensors = _named_tensors(model)
    modules = dict(model.named_modules())
    norms, convs = _reshape_rules()
    kinds = {}
    for owner_name, owner in modules.items():
        if isinstance(owner, norms):
            kinds[owner_name] = "norm"
        elif isinstance(owner, convs):
            kinds[owner_name] = "conv"
    expected = OrderedDict(
        (key, (_state_dict_shape(key, t, kinds), np.dtype(t.dtype))) for key, t in tensors.items()
    )
    fitted = fit_state(expected, kinds, state, source, name)

    from mspn_cli._mge import import_megengine

    mge = import_megengine()
    for key, value in fitted.items():
        tensor = tensors[key]
        value = np.ascontiguousarray(value).reshape(tuple(tensor.shape))
        tensor._reset(mge.tensor(value, dtype=value.dtype, device=tensor.device))


def _state_dict_shape(key: str, tensor: Any, kinds: Mapping[str, str]) -> tuple:
    """The shape `state_dict()` reports: MegEngine 1.13 flattens norm-layer tensors to (C,)."""
    shape = tuple(tensor.shape)
    if kinds.get(key.rpartition(".")[0]) == "norm":
        return (int(np.prod(shape)),)
    return shape


def _named_tensors(model: Any) -> "OrderedDict[str, Any]":
    """Parameters and buffers keyed exactly as `state_dict()` names them."""
    tensors: "OrderedDict[str, Any]" = OrderedDict(model.named_parameters())
    tensors.update(model.named_buffers())
    return tensors
