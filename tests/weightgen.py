"""Seeded random weights in the official MegEngine 0.x pickle format. Tests only.

The official files are a plain pickle of an OrderedDict of numpy arrays, saved by
MegEngine 0.x: BN running statistics are stored as (1, C, 1, 1) there (reference §6),
which is what `legacy_shapes=True` reproduces.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np


def random_state_dict(model, seed: int = 0, legacy_shapes: bool = True) -> "OrderedDict[str, np.ndarray]":
    rng = np.random.default_rng(seed)
    state = OrderedDict()
    for key, value in model.state_dict().items():
        shape = tuple(np.asarray(value).shape)
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
