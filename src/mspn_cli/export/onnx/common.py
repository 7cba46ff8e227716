"""What every part of the ONNX converter shares: versions, dtype mapping, small records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from mspn_cli.errors import UnsupportedOperatorError

# Bump whenever the converter's output changes: it is part of every graph-cache key
# (and of each cached graph's sidecar), so graphs written by an older converter are
# not reused.
EXPORTER_VERSION = "2"
ONNX_OPSET = 17
# IR version 8 is the oldest that carries opset 17, so older onnxruntime builds load it too.
ONNX_IR_VERSION = 8

NO_AXIS = 7  # MegEngine's "no axis given" marker (MEGDNN_MAX_NDIM) in Reshape/GetVarShape params
INT64_MAX = np.iinfo(np.int64).max


def onnx_dtype(dtype) -> int:
    from onnx import TensorProto

    table = {
        np.dtype(np.float32): TensorProto.FLOAT,
        np.dtype(np.float16): TensorProto.FLOAT16,
        np.dtype(np.float64): TensorProto.DOUBLE,
        np.dtype(np.int32): TensorProto.INT32,
        np.dtype(np.int64): TensorProto.INT64,
        np.dtype(np.int16): TensorProto.INT16,
        np.dtype(np.int8): TensorProto.INT8,
        np.dtype(np.uint8): TensorProto.UINT8,
        np.dtype(np.bool_): TensorProto.BOOL,
    }
    try:
        return table[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise UnsupportedOperatorError(f"cannot export tensors of dtype {dtype} to ONNX") from None


def var_dtype(var) -> Optional[np.dtype]:
    try:
        return np.dtype(var.dtype)
    except Exception:  # MegEngine workspace outputs have a Byte dtype numpy does not know
        return None




@dataclass
class Node:
    op_type: str
    inputs: List[str]
    outputs: List[str]
    attrs: Dict[str, Any]
    name: str


@dataclass
class FoldableConv:
    """A Conv/ConvTranspose whose output feeds exactly one operator, so that operator's
    per-channel affine (bias add, batch norm) can be folded into its weights."""

    node: Node
    weight: str  # initializer owned by this node alone
    bias: Optional[str]
    out_channels: int
    groups: int
    transposed: bool
