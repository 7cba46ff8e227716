"""The packaged state-dict manifests: every key, shape and dtype of each network, in order.

`weights/manifests/<model>.manifest.tsv` is a copy of the official manifest the networks
are built to (tests/data/reference, checked equal by tests/contract). With it, a weight
file is checked against its network without building the network, so `weights verify`
and strict loading work without MegEngine.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache
from typing import List, Tuple

from mspn_cli.errors import WeightsError

ManifestRow = Tuple[str, Tuple[int, ...], str]


def manifest_text(model_name: str) -> str:
    from importlib import resources

    try:
        return resources.files("mspn_cli.weights").joinpath("manifests", f"{model_name}.manifest.tsv").read_text()
    except FileNotFoundError:
        raise WeightsError(f"model {model_name} has no packaged state-dict manifest in this installation") from None


def parse_manifest(text: str) -> List[ManifestRow]:
    rows: List[ManifestRow] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        rows.append((key, tuple(int(d) for d in shape.split(",")) if shape else (), dtype))
    return rows


@lru_cache(maxsize=None)
def manifest(model_name: str) -> "OrderedDict[str, Tuple[Tuple[int, ...], str]]":
    """key -> (shape, dtype) in state-dict order, as MegEngine 1.13's `state_dict()` reports them."""
    return OrderedDict((key, (shape, dtype)) for key, shape, dtype in parse_manifest(manifest_text(model_name)))


def layer_kinds(entries) -> dict:
    """Owner module name -> "norm" or "conv", read from the keys alone.

    A module holding running statistics is a norm layer; one holding a 4-D weight is a
    convolution. These are the two families whose tensors may differ in layout only
    (reference §6), the same MegEngine 1.13's `load_state_dict` reshapes itself.
    """
    kinds = {}
    for key, (shape, _dtype) in entries.items():
        owner, _, leaf = key.rpartition(".")
        if leaf in ("running_mean", "running_var"):
            kinds[owner] = "norm"
        elif leaf == "weight" and len(shape) == 4 and kinds.get(owner) != "norm":
            kinds[owner] = "conv"
    return kinds
