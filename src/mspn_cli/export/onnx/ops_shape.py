"""ONNX converter: shapes and layout (shape arithmetic stays in the graph, so it accepts other sizes)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from mspn_cli.errors import UnsupportedOperatorError
from mspn_cli.export.onnx.common import INT64_MAX, NO_AXIS, onnx_dtype, var_dtype
from mspn_cli.export.onnx.recipes import Tracked, apply


class ShapeOps:
    """Mixin of `Converter`: shape, indexing, layout, reduction and padding handlers."""

    def op_GetVarShape(self, opr, params):
        out_var = opr.outputs[0]
        axis = int(params.get("axis", NO_AXIS))
        if all(self.is_const(v) for v in opr.inputs):
            shape = np.broadcast_shapes(*(self.consts[v.id].shape for v in opr.inputs))
            value = np.asarray(shape, dtype=np.int32)  # from shapes alone: never from the weights
            self.set_const(out_var, Tracked(value[axis : axis + 1] if axis != NO_AXIS else value))
            return
        shapes = [self.emit("Shape", [self.name_of(v)], out_var.name, np.int64) for v in opr.inputs]
        if len(shapes) > 1:
            # Several inputs: the shape of their broadcast. Only same-rank inputs, where it
            # is the element-wise maximum (every dim is 1 or the common size).
            ranks = {len(v.shape) for v in opr.inputs}
            if len(ranks) != 1:
                raise UnsupportedOperatorError("cannot export to ONNX: GetVarShape of inputs with different ranks")
            shape = self.emit("Max", shapes, out_var.name, np.int64)
        else:
            shape = shapes[0]
        if axis != NO_AXIS:
            shape = self.emit("Slice", [shape, self.constant(np.array([axis], np.int64), "axis"),
                                        self.constant(np.array([axis + 1], np.int64), "axis_end")], out_var.name, np.int64)
        dtype = var_dtype(out_var) or np.dtype(np.int32)
        self.bind(out_var, self.emit("Cast", [shape], out_var.name, dtype, to=onnx_dtype(dtype)))

    def op_Subtensor(self, opr, params):
        items = params if isinstance(params, list) else params.get("items", [])
        data_var, out_var = opr.inputs[0], opr.outputs[0]
        index_vars = list(opr.inputs[1:])
        rank = len(data_var.shape)
        starts, ends, axes, steps, gathers = [], [], [], [], []
        for item in items:
            axis = int(item["axis"])
            begin = index_vars.pop(0) if item.get("begin") else None
            end = index_vars.pop(0) if item.get("end") else None
            step = index_vars.pop(0) if item.get("step") else None
            index = index_vars.pop(0) if item.get("idx") else None
            if index is not None:
                gathers.append((axis, index))
                continue
            negative_step = step is not None and self.is_const(step) and int(self.literal_of(step).reshape(-1)[0]) < 0
            if step is not None and not self.is_const(step):
                raise UnsupportedOperatorError("cannot export to ONNX: Subtensor with a computed step")
            axes.append(axis)
            starts.append(self.int64_of(begin) if begin is not None else
                          self.constant(np.array([INT64_MAX if negative_step else 0], np.int64), "start"))
            ends.append(self.int64_of(end) if end is not None else
                        self.constant(np.array([-INT64_MAX if negative_step else INT64_MAX], np.int64), "end"))
            steps.append(self.int64_of(step) if step is not None else self.constant(np.array([1], np.int64), "step"))
        result = self.name_of(data_var)
        hint = out_var.name
        if axes:
            concat = lambda parts: parts[0] if len(parts) == 1 else self.emit("Concat", parts, hint, np.int64, axis=0)  # noqa: E731
            result = self.emit(
                "Slice",
                [result, concat(starts), concat(ends), self.constant(np.array(axes, np.int64), "axes"), concat(steps)],
                hint, var_dtype(out_var),
            )
        # Integer indices drop their axis; do the highest axis first so lower ones keep their number.
        for axis, index in sorted(gathers, key=lambda g: -g[0]):
            gathered = self.emit("Gather", [result, self.int64_of(index)], hint, var_dtype(out_var), axis=axis)
            result = self.emit("Squeeze", [gathered, self.constant(np.array([axis], np.int64), "axis")], hint, var_dtype(out_var))
            rank -= 1
        if rank == 0 and len(out_var.shape) == 1:
            # MegEngine has no 0-d graph tensors: a scalar is shape (1,).
            result = self.emit("Reshape", [result, self.constant(np.array([1], np.int64), "one")], hint, var_dtype(out_var))
        self.bind(out_var, result)

    def op_Concat(self, opr, params):
        out_var = opr.outputs[0]
        axis = int(params.get("axis", 0))
        if all(self.is_const(v) for v in opr.inputs):
            self.set_const(out_var, apply("concat", *(self.tracked(v) for v in opr.inputs), axis=axis))
            return
        self.bind(out_var, self.emit("Concat", [self.name_of(v) for v in opr.inputs], out_var.name, var_dtype(out_var), axis=axis))

    def op_Reshape(self, opr, params):
        data_var, shape_var, out_var = opr.inputs[0], opr.inputs[1], opr.outputs[0]
        unspec = int(params.get("axis", NO_AXIS))
        rank = len(out_var.shape)
        if self.is_const(shape_var):
            target = self.literal_of(shape_var).astype(np.int64).reshape(-1).copy()
            if 0 <= unspec < target.size:
                target[unspec] = -1
            if self.is_const(data_var):
                self.set_const(out_var, apply("reshape", self.tracked(data_var), shape=[int(t) for t in target]))
                return
            shape = self.constant(target, f"{out_var.name}:shape")
        else:
            shape = self.int64_of(shape_var)
            if 0 <= unspec < rank:
                # target * (1 - onehot) - onehot puts -1 at the axis MegEngine infers.
                onehot = np.zeros(rank, np.int64)
                onehot[unspec] = 1
                kept = self.emit("Mul", [shape, self.constant(1 - onehot, "keep")], out_var.name, np.int64)
                shape = self.emit("Sub", [kept, self.constant(onehot, "onehot")], out_var.name, np.int64)
        self.bind(out_var, self.emit("Reshape", [self.name_of(data_var), shape], out_var.name, var_dtype(out_var)))

    def op_Dimshuffle(self, opr, params):
        pattern = [int(p) for p in params["pattern"]]
        data_var, out_var = opr.inputs[0], opr.outputs[0]
        permutation = [p for p in pattern if p >= 0]
        if sorted(permutation) != list(range(len(data_var.shape))):
            raise UnsupportedOperatorError(f"cannot export to ONNX: Dimshuffle pattern {pattern} drops axes")
        if self.is_const(data_var):
            self.set_const(out_var, apply("dimshuffle", self.tracked(data_var), pattern=pattern))
            return
        result = self.name_of(data_var)
        if permutation != sorted(permutation):
            result = self.emit("Transpose", [result], out_var.name, var_dtype(out_var), perm=permutation)
        new_axes = [i for i, p in enumerate(pattern) if p < 0]
        if new_axes:
            result = self.emit("Unsqueeze", [result, self.constant(np.array(new_axes, np.int64), "axes")], out_var.name, var_dtype(out_var))
        self.bind(out_var, result)

    def op_AxisAddRemove(self, opr, params):
        data_var, out_var = opr.inputs[0], opr.outputs[0]
        steps = [(int(d["axisnum"]), int(d["method"])) for d in params["desc"]]
        if self.is_const(data_var):
            self.set_const(out_var, apply("axis_add_remove", self.tracked(data_var), steps=[list(step) for step in steps]))
            return
        result = self.name_of(data_var)
        for axis, method in steps:  # applied one after the other, as MegEngine does
            op_type = "Unsqueeze" if method == 0 else "Squeeze"
            result = self.emit(op_type, [result, self.constant(np.array([axis], np.int64), "axis")], out_var.name, var_dtype(out_var))
        self.bind(out_var, result)

    def op_Broadcast(self, opr, params):
        out_var = opr.outputs[0]
        shape = self.int64_of(opr.inputs[1])
        self.bind(out_var, self.emit("Expand", [self.name_of(opr.inputs[0]), shape], out_var.name, var_dtype(out_var)))

    def op_Reduce(self, opr, params):
        mode = params.get("mode", "SUM")
        axis = int(params.get("axis", NO_AXIS))
        out_var = opr.outputs[0]
        if len(opr.inputs) != 1 or axis == NO_AXIS:
            raise UnsupportedOperatorError("cannot export to ONNX: Reduce to a target shape (without an axis)")
        op_types = {"SUM": "ReduceSum", "MEAN": "ReduceMean", "MAX": "ReduceMax", "MIN": "ReduceMin",
                    "PRODUCT": "ReduceProd", "SUM_SQR": "ReduceSumSquare"}
        if mode not in op_types:
            raise UnsupportedOperatorError(f"cannot export to ONNX: Reduce mode {mode} is not supported")
        data = self.name_of(opr.inputs[0])
        if op_types[mode] == "ReduceSum":  # since opset 13, ReduceSum takes its axes as an input
            result = self.emit("ReduceSum", [data, self.constant(np.array([axis], np.int64), "axes")], out_var.name, var_dtype(out_var), keepdims=1)
        else:
            result = self.emit(op_types[mode], [data], out_var.name, var_dtype(out_var), axes=[axis], keepdims=1)
        self.bind(out_var, result)

    def op_PaddingForward(self, opr, params):
        data_var, out_var = opr.inputs[0], opr.outputs[0]
        in_shape, out_shape = tuple(data_var.shape), tuple(out_var.shape)
        ndim = len(in_shape)
        param = self._hidden_param(opr, lambda p: all(
            int(p.get(f"front_offset_dim{i}", 0)) + in_shape[i] + int(p.get(f"back_offset_dim{i}", 0)) == out_shape[i]
            for i in range(ndim)
        ))
        modes = {"CONSTANT": "constant", "REFLECT": "reflect", "REPLICATE": "edge"}
        mode = str(param.get("padding_mode", "CONSTANT"))
        if mode not in modes:
            raise UnsupportedOperatorError(f"cannot export to ONNX: Padding mode {mode} is not supported")
        pads = [int(param.get(f"front_offset_dim{i}", 0)) for i in range(ndim)]
        pads += [int(param.get(f"back_offset_dim{i}", 0)) for i in range(ndim)]
        dtype = var_dtype(out_var) or np.dtype(np.float32)
        inputs = [self.name_of(data_var), self.constant(np.array(pads, np.int64), "pads")]
        if modes[mode] == "constant":
            inputs.append(self.constant(np.array(param.get("padding_val", 0.0), dtype), "pad_value"))
        self.bind(out_var, self.emit("Pad", inputs, out_var.name, dtype, mode=modes[mode]))

    def _hidden_param(self, opr, fits: Callable[[Mapping[str, Any]], bool]) -> Mapping[str, Any]:
        """The traced parameters of `opr`: the first unused ones, in trace order, that fit its shapes.

        A wrong pairing cannot pass unnoticed: exported graphs are compared with MegEngine.
        """
        recorded = self.hidden_params.get(opr.type, [])
        for index, param in enumerate(recorded):
            if fits(param):
                return recorded.pop(index)
        raise UnsupportedOperatorError(
            f"cannot export to ONNX: the parameters of {opr.type} ('{opr.name}') are not readable from a dumped "
            "graph; export the network itself (mspn export, export_onnx) rather than a .mge file"
        )

