"""Strict loading of a state dict into a MegEngine network, tolerating legacy layouts only."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, List, Mapping, NamedTuple, Optional, Tuple

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


def _layout_of(owner: Any, leaf: str, rules) -> Optional[str]:
    """Which layout differences a tensor tolerates (reference §6): "norm" (any shape of the
    same size), "conv_bias" ((C,) and (1,C,1,1)), or None (the exact shape)."""
    norms, convs = rules
    if isinstance(owner, norms):
        return "norm"
    if isinstance(owner, convs) and leaf == "bias":
        return "conv_bias"
    return None


def _layout_only_difference(layout: Optional[str], file_shape: tuple, model_shape: tuple) -> bool:
    if int(np.prod(file_shape)) != int(np.prod(model_shape)):
        return False
    if layout == "norm":
        return True
    if layout == "conv_bias":
        channels = int(np.prod(model_shape))
        return {file_shape, model_shape} <= {(channels,), (1, channels, 1, 1)}
    return False


class ExpectedTensor(NamedTuple):
    """A network tensor as a weight file must hold it."""

    shape: Tuple[int, ...]  # as state_dict() reports it (norm-layer tensors flattened to (C,))
    dtype: np.dtype
    layout: Optional[str]  # see _layout_of


def expected_tensors(model: Any) -> "OrderedDict[str, ExpectedTensor]":
    """Every tensor `model` loads from a weight file, by state-dict key."""
    tensors = _named_tensors(model)
    modules = dict(model.named_modules())
    rules = _reshape_rules()
    expected: "OrderedDict[str, ExpectedTensor]" = OrderedDict()
    for key, tensor in tensors.items():
        owner_name, _, leaf = key.rpartition(".")
        layout = _layout_of(modules.get(owner_name), leaf, rules)
        expected[key] = ExpectedTensor(_state_dict_shape(tensor, layout), np.dtype(tensor.dtype), layout)
    return expected


def fit_state_dict(
    state: Mapping[str, np.ndarray], expected: Mapping[str, ExpectedTensor], source: str, name: str
) -> "OrderedDict[str, np.ndarray]":
    """`state`'s tensors in the expected shapes and dtypes, or one WeightsError describing every misfit.

    Tolerated: norm-layer tensors and conv biases stored as (1,C,1,1) instead of (C,) or
    the reverse, as MegEngine 0.x files do; float tensors of another precision (converted).
    Needs no MegEngine: graph templates fit weight files with it too.
    """
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong_shapes: List[str] = []
    fitted: "OrderedDict[str, np.ndarray]" = OrderedDict()
    for key, target in expected.items():
        if key not in state:
            continue
        value = np.asarray(state[key])
        if value.shape != tuple(target.shape):
            if not _layout_only_difference(target.layout, value.shape, tuple(target.shape)):
                wrong_shapes.append(f"{key}: file {_shape_text(value.shape)} vs model {_shape_text(tuple(target.shape))}")
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
    return fitted


def manifest_tensors(model_name: str) -> "OrderedDict[str, ExpectedTensor]":
    """Every tensor of `model_name` as its packaged state-dict manifest lists it (numpy only)."""
    from mspn_cli.weights.manifest import layer_kinds, manifest

    entries = manifest(model_name)
    kinds = layer_kinds(entries)
    expected: "OrderedDict[str, ExpectedTensor]" = OrderedDict()
    for key, (shape, dtype) in entries.items():
        owner, _, leaf = key.rpartition(".")
        kind = kinds.get(owner)
        layout = "norm" if kind == "norm" else "conv_bias" if kind == "conv" and leaf == "bias" else None
        expected[key] = ExpectedTensor(tuple(shape), np.dtype(dtype), layout)
    return expected


def fit_to_manifest(model_name: str, state: Mapping[str, np.ndarray], source: str) -> "OrderedDict[str, np.ndarray]":
    """Strict loading without a network: `state` checked against the packaged manifest of
    `model_name` (the rules and message of `fit_state_dict`). Needs numpy only."""
    return fit_state_dict(state, manifest_tensors(model_name), source, model_name)


def load_weights_into(
    model: Any, state: Mapping[str, np.ndarray], source: str, *, model_name: Optional[str] = None
) -> None:
    """Load `state` into `model` strictly (`fit_state_dict`), or raise one WeightsError describing every misfit."""
    name = model_name or getattr(model, "name", None) or type(model).__name__
    # The model's own tensors, by state-dict name. Module.state_dict()/load_state_dict()
    # copy every tensor through numpy one by one (about 10 s for MSPN's 1456 entries);
    # reading shapes and resetting tensors in place takes under a second.
    tensors = _named_tensors(model)
    fitted = fit_state_dict(state, expected_tensors(model), source, name)

    from mspn_cli._mge import import_megengine

    mge = import_megengine()
    for key, value in fitted.items():
        tensor = tensors[key]
        value = np.ascontiguousarray(value).reshape(tuple(tensor.shape))
        tensor._reset(mge.tensor(value, dtype=value.dtype, device=tensor.device))


def _state_dict_shape(tensor: Any, layout: Optional[str]) -> tuple:
    """The shape `state_dict()` reports: MegEngine 1.13 flattens norm-layer tensors to (C,)."""
    shape = tuple(tensor.shape)
    if layout == "norm":
        return (int(np.prod(shape)),)
    return shape


def _named_tensors(model: Any) -> "OrderedDict[str, Any]":
    """Parameters and buffers keyed exactly as `state_dict()` names them."""
    tensors: "OrderedDict[str, Any]" = OrderedDict(model.named_parameters())
    tensors.update(model.named_buffers())
    return tensors
