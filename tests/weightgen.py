"""Seeded random weights in the official MegEngine 0.x pickle format. Tests only.

The official files are a plain pickle of an OrderedDict of numpy arrays, saved by
MegEngine 0.x: BN running statistics are stored as (1, C, 1, 1) there (reference §6),
which is what `legacy_shapes=True` reproduces.

The keys, their order and shapes come from the official manifest in tests/data/reference
(the order and shapes MegEngine 1.13's `state_dict()` reports, which tests/contract checks
line by line), so weights are generated with numpy alone, on any Python: no network is
built and MegEngine is not needed. Same keys, order, shapes and draws as when they came
from `model.state_dict()`, so the same arrays and, under the same numpy, the same bytes.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np


REFERENCE = Path(__file__).resolve().parent / "data" / "reference"


def manifest_shapes(model_name: str) -> "OrderedDict[str, tuple]":
    """key -> shape, in order, from tests/data/reference/<model_name>.manifest.tsv."""
    shapes = OrderedDict()
    for line in (REFERENCE / f"{model_name}.manifest.tsv").read_text().splitlines():
        if line.strip():
            key, shape, _dtype = line.split("\t")
            shapes[key] = tuple(int(d) for d in shape.split(",")) if shape else ()
    return shapes


def random_state_dict(model, seed: int = 0, legacy_shapes: bool = True) -> "OrderedDict[str, np.ndarray]":
    """`model`: a model name (its manifest gives keys and shapes) or a built MegEngine network."""
    if isinstance(model, str):
        shapes = manifest_shapes(model)
    else:
        shapes = OrderedDict((key, tuple(np.asarray(value).shape)) for key, value in model.state_dict().items())
    rng = np.random.default_rng(seed)
    state = OrderedDict()
    for key, shape in shapes.items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "weight" and len(shape) == 4:
            fan_in = int(np.prod(shape[1:])) if "deconv" not in key else int(shape[0] * shape[2] * shape[3] / 4)
            array = rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), size=shape)
        elif leaf == "weight":  # BN gamma
            array = rng.uniform(0.5, 1.0, size=shape)
        elif leaf == "bias":
            array = rng.normal(0.0, 0.05, size=shape)
        elif leaf == "running_mean":
            array = rng.normal(0.0, 0.1, size=shape)
        elif leaf == "running_var":
            array = rng.uniform(0.8, 1.5, size=shape)
        else:
            array = rng.normal(0.0, 0.1, size=shape)
        array = array.astype(np.float32)
        if legacy_shapes and leaf in ("running_mean", "running_var"):
            array = array.reshape(1, -1, 1, 1)
        state[key] = array
    return state


def write_official_pickle(state, path: Path, wrap: bool = False) -> Path:
    """Write `state` as MegEngine 0.x `mge.save` did: pickle.dump with the highest protocol."""
    obj = {"epoch": 0, "state_dict": state} if wrap else state
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return path
