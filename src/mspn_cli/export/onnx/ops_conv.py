"""ONNX converter: convolutions, transposed convolutions, ConvBias, batch norm, and folding
per-channel affines (bias adds, inference batch norms) into the convolution before them."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from mspn_cli.errors import UnsupportedOperatorError
from mspn_cli.export.onnx.common import FoldableConv
from mspn_cli.export.onnx.recipes import Tracked, apply


class ConvOps:
    """Mixin of `Converter`: operator handlers for convolutions and normalisation."""

    def _conv_weight(self, opr, params, weight_var, transposed: bool) -> Tuple[Tracked, int]:
        """The ONNX weight array (owned by the caller) and the group count."""
        if not self.is_const(weight_var):
            raise UnsupportedOperatorError(
                f"cannot export to ONNX: {opr.type} with computed (non-constant) weights is not supported"
            )
        sparse = params.get("sparse", "DENSE")
        if sparse not in ("DENSE", "GROUP"):
            raise UnsupportedOperatorError(f"cannot export to ONNX: {opr.type} with sparse={params['sparse']}")
        groups = int(self.consts[weight_var.id].shape[0]) if sparse == "GROUP" else 1
        weight = apply(
            "conv_weight", self.tracked(weight_var), grouped=sparse == "GROUP",
            flip=params.get("mode", "CROSS_CORRELATION") == "CONVOLUTION",
        )
        return weight, groups

    def _conv_attrs(self, params, weight: np.ndarray, groups: int) -> Dict[str, Any]:
        ph, pw = int(params.get("pad_h", 0)), int(params.get("pad_w", 0))
        return {
            "kernel_shape": [int(weight.shape[2]), int(weight.shape[3])],
            "strides": [int(params.get("stride_h", 1)), int(params.get("stride_w", 1))],
            "pads": [ph, pw, ph, pw],
            "dilations": [int(params.get("dilate_h", 1)), int(params.get("dilate_w", 1))],
            "group": groups,
        }

    def _emit_conv(self, opr, params, data_var, weight_var, out_var, transposed: bool, bias: Optional[Tracked] = None):
        self._check_nchw(opr, params)
        tracked_weight, groups = self._conv_weight(opr, params, weight_var, transposed)
        weight = tracked_weight.value
        attrs = self._conv_attrs(params, weight, groups)
        out_channels = weight.shape[1] * groups if transposed else weight.shape[0]
        if transposed:
            attrs.update(self._deconv_output_padding(opr, params, weight, data_var, out_var))
        weight_name = self.constant(tracked_weight, f"{weight_var.name}:w")
        inputs = [self.name_of(data_var), weight_name]
        bias_name = None
        if bias is not None:
            bias_name = self.constant(apply("channel_vector", bias, channels=out_channels), f"{opr.name}:b")
            inputs.append(bias_name)
        op_type = "ConvTranspose" if transposed else "Conv"
        output = self.emit(op_type, inputs, out_var.name, np.float32, **attrs)
        node = self.nodes[-1]
        self.bind(out_var, output)
        if self.single_use(out_var):
            self.foldable[out_var.id] = FoldableConv(node, weight_name, bias_name, out_channels, groups, transposed)
        return output

    def _deconv_output_padding(self, opr, params, weight, data_var, out_var) -> Dict[str, Any]:
        # MegEngine infers the deconvolution output size exactly like ONNX's default;
        # a larger static size means an explicit output shape that ONNX expresses as output_padding.
        in_shape, out_shape = tuple(data_var.shape), tuple(out_var.shape)
        extra = []
        for axis, key in ((2, "h"), (3, "w")):
            stride, pad = int(params.get(f"stride_{key}", 1)), int(params.get(f"pad_{key}", 0))
            dilate = int(params.get(f"dilate_{key}", 1))
            natural = (in_shape[axis] - 1) * stride - 2 * pad + dilate * (weight.shape[axis] - 1) + 1
            extra.append(out_shape[axis] - natural)
        if any(e != 0 for e in extra):
            if any(e < 0 for e in extra):
                raise UnsupportedOperatorError(f"cannot export to ONNX: {opr.type} with a cropped output shape")
            return {"output_padding": extra}
        return {}

    def op_ConvolutionForward(self, opr, params):
        self._emit_conv(opr, params, opr.inputs[0], opr.inputs[1], opr.outputs[0], transposed=False)

    def op_ConvolutionBackwardData(self, opr, params):
        # Inputs are (filter, input[, output-shape reference]): the gradient of a
        # convolution w.r.t. its data, i.e. a transposed convolution.
        self._emit_conv(opr, params, opr.inputs[1], opr.inputs[0], opr.outputs[0], transposed=True)

    def op_ConvBiasForward(self, opr, params):
        # Produced by optimize_for_inference(fuse_conv_bias_nonlinearity):
        # activation(conv(x, w) + bias [+ z]). The "bias" may be a per-channel constant or
        # a whole tensor (a fused residual addition), which then becomes an Add.
        out_var = opr.outputs[0]
        if len(opr.inputs) > 4:
            raise UnsupportedOperatorError("cannot export to ONNX: ConvBias with more than four inputs")
        self._check_nchw(opr, params)
        tracked_weight, groups = self._conv_weight(opr, params, opr.inputs[1], transposed=False)
        weight = tracked_weight.value
        attrs = self._conv_attrs(params, weight, groups)
        inputs = [self.name_of(opr.inputs[0]), self.constant(tracked_weight, f"{opr.inputs[1].name}:w")]
        addends = list(opr.inputs[2:])
        if addends and self.is_const(addends[0]) and self.consts[addends[0].id].size == weight.shape[0]:
            bias = apply("astype", apply("reshape", self.tracked(addends[0]), shape=[-1]), dtype="float32")
            inputs.append(self.constant(bias, f"{opr.name}:b"))
            addends = addends[1:]
        result = self.emit("Conv", inputs, out_var.name, np.float32, **attrs)
        for addend in addends:
            result = self.emit("Add", [result, self.name_of(addend)], out_var.name, np.float32)
        mode = params.get("nonlineMode", "IDENTITY")
        activation = {"IDENTITY": None, "RELU": "Relu", "SIGMOID": "Sigmoid", "H_SWISH": "HardSwish"}
        if mode not in activation:
            raise UnsupportedOperatorError(f"cannot export to ONNX: ConvBias with nonlineMode {mode}")
        if activation[mode]:
            result = self.emit(activation[mode], [result], out_var.name, np.float32)
        self.bind(out_var, result)

    def _fold_channel_affine(self, source_var, out_var, scale: Optional[Tracked], shift: Tracked) -> bool:
        """Fold y = conv(x) * scale + shift (per output channel) into the conv; True if done.

        The arithmetic is recipes.fold_scale_into_weight / fold_affine_into_bias (float64,
        stored as float32), which graph templates replay on the weights.
        """
        conv = self.foldable.get(source_var.id)
        if conv is None:
            return False
        channels = conv.out_channels
        if np.asarray(shift.value).size not in (1, channels) or (scale is not None and np.asarray(scale.value).size not in (1, channels)):
            return False
        del self.foldable[source_var.id]
        bias = self.tracked_initializer(conv.bias) if conv.bias else None
        if scale is not None:
            weight = apply("fold_scale_into_weight", self.tracked_initializer(conv.weight), scale,
                           channels=channels, groups=conv.groups, transposed=conv.transposed)
            self.set_initializer(conv.weight, weight)
        folded = apply("fold_affine_into_bias", bias, scale, shift, channels=channels)
        if conv.bias is None:
            conv.bias = self.constant(folded, f"{conv.node.name}:b")
            conv.node.inputs.append(conv.bias)
        else:
            self.set_initializer(conv.bias, folded)
        self.bind(out_var, conv.node.outputs[0])
        if self.single_use(out_var):
            self.foldable[out_var.id] = conv
        return True

    # ----------------------------------------------------------------- normalisation

    def op_BatchNormForward(self, opr, params):
        if params.get("fwd_mode", "INFERENCE") != "INFERENCE":
            raise UnsupportedOperatorError(
                f"cannot export to ONNX: BatchNorm in {params.get('fwd_mode')} mode (put the model in eval mode)"
            )
        if params.get("param_dim", "DIM_1C11") != "DIM_1C11":
            raise UnsupportedOperatorError(f"cannot export to ONNX: BatchNorm with param_dim {params.get('param_dim')}")
        data, scale_var, bias_var, mean_var, var_var = opr.inputs[:5]
        out_var = opr.outputs[-1]  # outputs: batch mean, batch inv-variance, workspace, y
        if not all(self.is_const(v) for v in (scale_var, bias_var, mean_var, var_var)):
            raise UnsupportedOperatorError("cannot export to ONNX: BatchNorm with computed statistics")
        epsilon = float(params.get("epsilon", 1e-5))
        gamma, beta, mean, variance = (apply("flat_float64", self.tracked(v)) for v in (scale_var, bias_var, mean_var, var_var))
        scale = apply("bn_scale", gamma, variance, epsilon=epsilon)
        shift = apply("bn_shift", beta, mean, scale)
        if self._fold_channel_affine(data, out_var, scale, shift):
            return
        shape = [1, -1, 1, 1]
        scale32, shift32 = (apply("reshape", apply("astype", t, dtype="float32"), shape=shape) for t in (scale, shift))
        scaled = self.emit("Mul", [self.name_of(data), self.constant(scale32, f"{opr.name}:scale")], out_var.name, np.float32)
        self.bind(out_var, self.emit("Add", [scaled, self.constant(shift32, f"{opr.name}:shift")], out_var.name, np.float32))

