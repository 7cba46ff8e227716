"""ONNX converter: element-wise operators (Elemwise modes, fused forms, type casts)."""

from __future__ import annotations

import numpy as np

from mspn_cli.errors import UnsupportedOperatorError
from mspn_cli.export.onnx.common import onnx_dtype, var_dtype
from mspn_cli.export.onnx.recipes import NUMPY_ELEMWISE, apply


# Elemwise mode -> (ONNX op chain builder, numpy evaluator or None).
# Builders take (converter, input names) and return the output name.
_UNARY_ONNX = {
    "RELU": "Relu",
    "ABS": "Abs",
    "CEIL": "Ceil",
    "FLOOR": "Floor",
    "EXP": "Exp",
    "LOG": "Log",
    "NEGATE": "Neg",
    "SIGMOID": "Sigmoid",
    "TANH": "Tanh",
    "SIN": "Sin",
    "COS": "Cos",
    "ERF": "Erf",
    "SOFTPLUS": "Softplus",
    "H_SWISH": "HardSwish",
}
_BINARY_ONNX = {
    "ADD": "Add",
    "SUB": "Sub",
    "MUL": "Mul",
    "TRUE_DIV": "Div",
    "MAX": "Max",
    "MIN": "Min",
    "POW": "Pow",
}


class ElementwiseOps:
    """Mixin of `Converter`: element-wise operator handlers."""

    def op_Elemwise(self, opr, params):
        mode = params.get("mode")
        out_var = opr.outputs[0]
        inputs = list(opr.inputs)
        out_dtype = var_dtype(out_var)
        if all(self.is_const(v) for v in inputs) and mode in NUMPY_ELEMWISE:
            dtype = np.dtype(out_dtype or np.float32).name
            self.set_const(out_var, apply("elemwise", *(self.tracked(v) for v in inputs), mode=mode, dtype=dtype))
            return
        if mode == "ADD" and self._try_fold_bias(inputs, out_var):
            return
        names = lambda: [self.name_of(v) for v in inputs]  # noqa: E731 - deferred so folding can skip constants
        hint = out_var.name
        if mode in _UNARY_ONNX:
            result = self.emit(_UNARY_ONNX[mode], names(), hint, out_dtype)
        elif mode in _BINARY_ONNX:
            result = self.emit(_BINARY_ONNX[mode], names(), hint, out_dtype)
        elif mode == "FLOOR_DIV" and out_dtype is not None and out_dtype.kind == "f":
            result = self.emit("Floor", [self.emit("Div", names(), hint, out_dtype)], hint, out_dtype)
        elif mode == "SILU":
            (x,) = names()
            result = self.emit("Mul", [x, self.emit("Sigmoid", [x], hint, out_dtype)], hint, out_dtype)
        elif mode in ("FUSE_ADD_RELU", "FUSE_ADD_SIGMOID", "FUSE_ADD_TANH", "FUSE_ADD_H_SWISH"):
            activation = {"FUSE_ADD_RELU": "Relu", "FUSE_ADD_SIGMOID": "Sigmoid", "FUSE_ADD_TANH": "Tanh", "FUSE_ADD_H_SWISH": "HardSwish"}[mode]
            if mode == "FUSE_ADD_RELU" and self._try_fold_bias(inputs, out_var, then_relu=True):
                return
            result = self.emit(activation, [self.emit("Add", names(), hint, out_dtype)], hint, out_dtype)
        elif mode == "FUSE_MUL_ADD3":
            a, b, c = names()
            result = self.emit("Add", [self.emit("Mul", [a, b], hint, out_dtype), c], hint, out_dtype)
        elif mode == "FUSE_MUL_ADD4":
            a, b, c, d = names()
            left = self.emit("Mul", [a, b], hint, out_dtype)
            result = self.emit("Add", [left, self.emit("Mul", [c, d], hint, out_dtype)], hint, out_dtype)
        else:
            raise UnsupportedOperatorError(
                f"cannot export to ONNX: MegEngine operator Elemwise mode {mode} is not supported by the converter; "
                "use the megengine or mge-lite backend (or --format mge)"
            )
        self.bind(out_var, result)

    def _try_fold_bias(self, inputs, out_var, then_relu: bool = False) -> bool:
        """ADD(conv_output, per-channel constant) -> the conv's bias."""
        if len(inputs) != 2:
            return False
        for data, other in ((inputs[0], inputs[1]), (inputs[1], inputs[0])):
            if data.id in self.foldable and self.is_const(other):
                value = self.consts[other.id]
                shift = self.tracked(other)
                if value.ndim > 4:
                    return False
                # Aligned to N x C x H x W by broadcasting, only the channel axis may exceed 1.
                aligned = (1,) * (4 - value.ndim) + tuple(value.shape)
                if aligned[0] != 1 or aligned[2] != 1 or aligned[3] != 1:
                    return False
                if then_relu:
                    # Fold the add, then apply the relu to the conv output.
                    conv = self.foldable[data.id]
                    if not self._fold_channel_affine(data, out_var, None, shift):
                        return False
                    self.foldable.pop(out_var.id, None)
                    result = self.emit("Relu", [conv.node.outputs[0]], out_var.name, np.float32)
                    self.bind(out_var, result)
                    return True
                return self._fold_channel_affine(data, out_var, None, shift)
        return False

    def op_TypeCvt(self, opr, params):
        out_var = opr.outputs[0]
        dtype = var_dtype(out_var)
        if self.is_const(opr.inputs[0]):
            self.set_const(out_var, apply("astype", self.tracked(opr.inputs[0]), dtype=np.dtype(dtype).name))
            return
        self.bind(out_var, self.emit("Cast", [self.name_of(opr.inputs[0])], out_var.name, dtype, to=onnx_dtype(dtype)))

