"""ONNX converter: pooling and resizing."""

from __future__ import annotations

import numpy as np

from mspn_cli.errors import UnsupportedOperatorError


class PoolOps:
    """Mixin of `Converter`: pooling and resize handlers."""

    def op_PoolingForward(self, opr, params):
        self._check_nchw(opr, params)
        attrs = {
            "kernel_shape": [int(params["window_h"]), int(params["window_w"])],
            "strides": [int(params.get("stride_h", 1)), int(params.get("stride_w", 1))],
            "pads": [int(params.get("pad_h", 0)), int(params.get("pad_w", 0))] * 2,
        }
        mode = params.get("mode", "MAX")
        if mode == "MAX":
            op_type = "MaxPool"
        elif mode in ("AVERAGE", "AVERAGE_COUNT_EXCLUDE_PADDING"):
            op_type = "AveragePool"
            attrs["count_include_pad"] = 1 if mode == "AVERAGE" else 0
        else:
            raise UnsupportedOperatorError(f"cannot export to ONNX: Pooling mode {mode} is not supported")
        out_var = opr.outputs[0]
        self.bind(out_var, self.emit(op_type, [self.name_of(opr.inputs[0])], out_var.name, np.float32, **attrs))

    def op_ResizeForward(self, opr, params):
        self._check_nchw(opr, params)
        mode = params.get("imode", "LINEAR")
        # MegEngine's LINEAR resize samples at (dst + 0.5) * in/out - 0.5 and clamps at the
        # border (align_corners=False); NEAREST takes floor(dst * in/out).
        if mode == "LINEAR":
            attrs = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
        elif mode == "NEAREST":
            attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
        else:
            raise UnsupportedOperatorError(f"cannot export to ONNX: Resize interpolation mode {mode} is not supported")
        data_var, size_var, out_var = opr.inputs[0], opr.inputs[1], opr.outputs[0]
        data = self.name_of(data_var)
        batch_channels = self.emit(
            "Slice",
            [self.emit("Shape", [data], out_var.name, np.int64),
             self.constant(np.array([0], np.int64), "zero"), self.constant(np.array([2], np.int64), "two")],
            out_var.name, np.int64,
        )
        if self.is_const(size_var):
            # Float sizes come from `scale_factor` arithmetic: MegEngine truncates them.
            hw = self.constant(np.floor(self.literal_of(size_var)).astype(np.int64).reshape(-1), f"{size_var.name}:hw")
        else:
            hw = self.int64_of(size_var)
        sizes = self.emit("Concat", [batch_channels, hw], out_var.name, np.int64, axis=0)
        self.bind(out_var, self.emit("Resize", [data, "", "", sizes], out_var.name, np.float32, **attrs))

