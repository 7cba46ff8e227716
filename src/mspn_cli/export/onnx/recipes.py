"""The numpy arithmetic the converter applies to constants, and recipes that record it.

Every constant the converter computes from another constant (kernel layouts, folded
batch norms and biases, constant element-wise operators, casts, shape operators on
constants) is computed here, by name, through `apply`. When a constant comes from the
network's weights, `apply` also records a `Recipe`: which weights, and which of these
functions with which parameters. A graph template (export/graph_template.py) stores
those recipes, and the filler replays them with the SAME functions on an official
weight file, so a graph built without MegEngine has the exporter's bits by construction.

NumPy 2 changed scalar promotion (NEP 50): every function states its dtypes explicitly
(float64 arrays, np.float64 scalars), so numpy 1 and 2 compute the same bits.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional, Sequence, Tuple

import numpy as np


def _np_relu(x):
    return np.maximum(x, 0)


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# Elemwise mode -> its numpy evaluation on constants.
NUMPY_ELEMWISE: Dict[str, Callable[..., np.ndarray]] = {
    "RELU": _np_relu,
    "ABS": np.abs,
    "CEIL": np.ceil,
    "FLOOR": np.floor,
    "EXP": np.exp,
    "LOG": np.log,
    "NEGATE": np.negative,
    "SIGMOID": _np_sigmoid,
    "TANH": np.tanh,
    "ADD": np.add,
    "SUB": np.subtract,
    "MUL": np.multiply,
    "TRUE_DIV": np.true_divide,
    "MAX": np.maximum,
    "MIN": np.minimum,
    "POW": np.power,
    "FUSE_ADD_RELU": lambda a, b: _np_relu(a + b),
    "FUSE_MUL_ADD3": lambda a, b, c: a * b + c,
    "FUSE_MUL_ADD4": lambda a, b, c, d: a * b + c * d,
}


# --------------------------------------------------------------------------- the operations


def elemwise(*values, mode: str, dtype: str) -> np.ndarray:
    """A MegEngine Elemwise operator evaluated on constants, cast to its output dtype."""
    return np.asarray(NUMPY_ELEMWISE[mode](*values)).astype(np.dtype(dtype))


def astype(value, dtype: str) -> np.ndarray:
    return np.asarray(value).astype(np.dtype(dtype))


def reshape(value, shape: Sequence[int]) -> np.ndarray:
    return np.asarray(value).reshape(tuple(int(s) for s in shape))


def concat(*values, axis: int) -> np.ndarray:
    return np.concatenate(values, axis=int(axis))


def dimshuffle(value, pattern: Sequence[int]) -> np.ndarray:
    """MegEngine's Dimshuffle: a transpose, with new unit axes where the pattern says -1."""
    permutation = [int(p) for p in pattern if int(p) >= 0]
    result = np.transpose(value, permutation)
    new_axes = [i for i, p in enumerate(pattern) if int(p) < 0]
    return np.expand_dims(result, new_axes) if new_axes else result


def axis_add_remove(value, steps: Sequence[Sequence[int]]) -> np.ndarray:
    """MegEngine's AxisAddRemove: (axis, method) steps, 0 adds an axis and 1 removes it, in order."""
    for axis, method in steps:
        value = np.expand_dims(value, int(axis)) if int(method) == 0 else np.squeeze(value, int(axis))
    return value


def conv_weight(weight, grouped: bool, flip: bool) -> np.ndarray:
    """A MegEngine kernel in ONNX's layout (a float32 copy the caller owns).

    Grouped: MegEngine's (G, OC/G, IC/G, kh, kw) for conv, (G, IC/G, OC/G, kh, kw) for
    deconv; ONNX folds the group into the first axis in both cases. `flip`: MegEngine's
    CONVOLUTION mode (a true convolution) is ONNX's cross-correlation with a flipped kernel.
    """
    result = np.array(weight, dtype=np.float32, copy=True)
    if grouped:
        result = result.reshape((result.shape[0] * result.shape[1],) + result.shape[2:])
    if flip:
        result = np.ascontiguousarray(result[..., ::-1, ::-1])
    return result


def channel_vector(value, channels: int) -> np.ndarray:
    """A per-channel bias as ONNX's float32 (C,) vector."""
    return np.asarray(value, np.float32).reshape(int(channels)).copy()


def flat_float64(value) -> np.ndarray:
    return np.asarray(value).astype(np.float64).reshape(-1)


def bn_scale(gamma, variance, epsilon: float) -> np.ndarray:
    """Inference batch norm's per-channel scale, gamma / sqrt(var + eps), in float64."""
    return gamma / np.sqrt(variance + np.float64(epsilon))


def bn_shift(beta, mean, scale) -> np.ndarray:
    """Inference batch norm's per-channel shift, beta - mean * scale, in float64."""
    return beta - mean * scale


def _per_channel(value, channels: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.float64).reshape(-1), (int(channels),))


def fold_scale_into_weight(weight, scale, channels: int, groups: int, transposed: bool) -> np.ndarray:
    """conv(x, w) * scale (per output channel) as conv(x, w'): w' in float32, computed in float64."""
    scale = _per_channel(scale, channels)
    result = np.asarray(weight).astype(np.float64)
    if transposed:
        # (IC, OC/G, kh, kw): output channel g*OC/G + j lives at [group g rows, column j].
        in_per_group = result.shape[0] // int(groups)
        per_group = int(channels) // int(groups)
        grouped = result.reshape(int(groups), in_per_group, per_group, *result.shape[2:])
        grouped = grouped * scale.reshape(int(groups), 1, per_group, 1, 1)
        result = grouped.reshape(result.shape)
    else:
        result = result * scale.reshape(-1, 1, 1, 1)
    return result.astype(np.float32)


def fold_affine_into_bias(bias, scale, shift, channels: int) -> np.ndarray:
    """The bias of conv(x) * scale + shift: (bias * scale + shift) in float64, stored as float32.

    `bias` None: the conv had none (zeros); `scale` None: a plain bias addition.
    """
    shift = _per_channel(shift, channels)
    result = np.asarray(bias).astype(np.float64) if bias is not None else np.zeros(int(channels), dtype=np.float64)
    if scale is not None:
        result = result * _per_channel(scale, channels)
    return (result + shift).astype(np.float32)


OPERATIONS: Dict[str, Callable[..., np.ndarray]] = {
    fn.__name__: fn
    for fn in (
        elemwise, astype, reshape, concat, dimshuffle, axis_add_remove, conv_weight, channel_vector,
        flat_float64, bn_scale, bn_shift, fold_scale_into_weight, fold_affine_into_bias,
    )
}


# --------------------------------------------------------------------------- recipes


class Recipe:
    """How a constant is computed from the weights: `op` on `args` with `params`.

    Leaves: op "weight" (params {"key": state-dict key}) and op "literal" (`value`, a
    constant that does not depend on the weights). Recipes form a DAG (a batch norm's
    scale feeds both the folded weight and the folded bias); identity is the node.
    """

    __slots__ = ("op", "args", "params", "value")

    def __init__(self, op: str, args: Tuple[Optional["Recipe"], ...] = (), params: Optional[Dict[str, Any]] = None,
                 value: Optional[np.ndarray] = None):
        self.op = op
        self.args = tuple(args)
        self.params = dict(params or {})
        self.value = value

    @classmethod
    def weight(cls, key: str) -> "Recipe":
        return cls("weight", (), {"key": key})

    @classmethod
    def literal(cls, value) -> "Recipe":
        return cls("literal", (), {}, np.asarray(value))


class Tracked(NamedTuple):
    """A constant's value at export time, and its recipe (None: it does not depend on the weights)."""

    value: np.ndarray
    recipe: Optional[Recipe] = None


def apply(op: str, *inputs: Optional[Tracked], **params) -> Tracked:
    """`OPERATIONS[op]` on the inputs' values (None passes through), recording the recipe
    when any input comes from the weights."""
    values = [item.value if item is not None else None for item in inputs]
    value = OPERATIONS[op](*values, **params)
    if not any(item is not None and item.recipe is not None for item in inputs):
        return Tracked(value)
    args = tuple(
        None if item is None else item.recipe if item.recipe is not None else Recipe.literal(item.value)
        for item in inputs
    )
    return Tracked(value, Recipe(op, args, params))


def evaluate_all(roots: Sequence[Recipe], leaves: Callable[[str], np.ndarray]) -> Iterator[np.ndarray]:
    """Each root's value in turn, replaying the recipes with `leaves(key)` giving each weight
    (as the network holds it). A shared node is computed once and kept only while a later
    node still needs it, so memory stays near one network's weights."""
    uses: Dict[int, int] = {}

    def count(recipe: Recipe) -> None:
        uses[id(recipe)] = uses.get(id(recipe), 0) + 1
        if uses[id(recipe)] == 1:
            for arg in recipe.args:
                if arg is not None:
                    count(arg)

    for root in roots:
        count(root)
    memo: Dict[int, np.ndarray] = {}

    def value_of(recipe: Recipe) -> np.ndarray:
        key = id(recipe)
        if key in memo:
            value = memo[key]
        elif recipe.op == "weight":
            value = leaves(recipe.params["key"])
        elif recipe.op == "literal":
            value = recipe.value
        else:
            value = OPERATIONS[recipe.op](*(value_of(arg) if arg is not None else None for arg in recipe.args), **recipe.params)
        uses[key] -= 1
        if uses[key] > 0:
            memo[key] = value
        else:
            memo.pop(key, None)
        return value

    for root in roots:
        yield value_of(root)
