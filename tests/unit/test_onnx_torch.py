"""The ONNX->PyTorch interpreter (runtime/onnx_torch.py), operator by operator, against onnxruntime.

Each case is a one- or two-node ONNX graph in the modes the project's converter emits;
onnxruntime (a hard dependency) is the reference implementation of the ONNX spec.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch (the optional [torch] extra) is not installed")
onnx = pytest.importorskip("onnx")  # noqa: E402 - a hard dependency of the package
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import onnxruntime as ort  # noqa: E402

from mspn_cli.errors import UnsupportedOperatorError  # noqa: E402
from mspn_cli.runtime.onnx_torch import GraphNode, GraphPlan, OnnxTorchModule, plan_from_onnx  # noqa: E402

pytestmark = pytest.mark.torch
RNG = np.random.default_rng(7)
X_SHAPE = (2, 3, 9, 7)


def _model(nodes, initializers, output_count=1):
    graph = helper.make_graph(
        nodes, "case", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(output_count)],
        [numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _i64(*values):
    return np.array(values, dtype=np.int64)


CASES = {
    "conv-asymmetric-pads-groups-bias": ([helper.make_node("Conv", ["x", "w", "b"], ["y0"], kernel_shape=[3, 3], pads=[0, 1, 2, 1], strides=[2, 1], group=3)],
                                         {"w": RNG.standard_normal((6, 1, 3, 3)).astype(np.float32), "b": RNG.standard_normal(6).astype(np.float32)}),
    "conv-transpose": ([helper.make_node("ConvTranspose", ["x", "w", "b"], ["y0"], kernel_shape=[4, 4], pads=[1, 1, 1, 1], strides=[2, 2])],
                       {"w": RNG.standard_normal((3, 5, 4, 4)).astype(np.float32), "b": RNG.standard_normal(5).astype(np.float32)}),
    "maxpool-asymmetric": ([helper.make_node("MaxPool", ["x"], ["y0"], kernel_shape=[3, 3], pads=[0, 0, 1, 1], strides=[2, 2])], {}),
    "maxpool-ceil": ([helper.make_node("MaxPool", ["x"], ["y0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], ceil_mode=1)], {}),
    "avgpool-exclude-pad": ([helper.make_node("AveragePool", ["x"], ["y0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])], {}),
    "sub-div-relu-sigmoid": ([helper.make_node("Sub", ["x", "m"], ["s"]), helper.make_node("Div", ["s", "d"], ["q"]),
                              helper.make_node("Relu", ["q"], ["r"]), helper.make_node("Sigmoid", ["r"], ["y0"])],
                             {"m": np.array([1, 2, 3], np.float32).reshape(1, 3, 1, 1), "d": np.array([2, 4, 8], np.float32).reshape(1, 3, 1, 1)}),
    # the detector's FPN: upsample one map to another's spatial size, computed from shapes
    "resize-to-shape-of": ([helper.make_node("Shape", ["x"], ["shape"]), helper.make_node("Slice", ["shape", "zero", "two"], ["nc"]),
                            helper.make_node("Mul", ["shape", "twos"], ["doubled"]),
                            helper.make_node("Slice", ["doubled", "two", "four"], ["hw"]),
                            helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
                            helper.make_node("Resize", ["x", "", "", "sizes"], ["y0"], mode="linear", coordinate_transformation_mode="half_pixel")],
                           {"zero": _i64(0), "two": _i64(2), "four": _i64(4), "twos": _i64(1, 1, 2, 2)}),
    "resize-nearest-scales": ([helper.make_node("Resize", ["x", "", "scales"], ["y0"], mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
                              {"scales": np.array([1, 1, 2, 3], np.float32)}),
    "slice-negative-step": ([helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y0"])],
                            {"s": _i64(-1, 1), "e": _i64(-100, 100), "a": _i64(3, 2), "st": _i64(-2, 3)}),
    "reshape-transpose-gather": ([helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
                                 helper.make_node("Gather", ["t", "idx"], ["y0"], axis=1)],
                                {"shape": _i64(0, 3, -1), "idx": _i64(-1, 0, 5)}),
    "unsqueeze-squeeze-expand-concat": ([helper.make_node("Unsqueeze", ["x", "ax"], ["u"]), helper.make_node("Squeeze", ["u", "ax"], ["s"]),
                                         helper.make_node("Expand", ["one", "shape"], ["e"]), helper.make_node("Concat", ["s", "e"], ["y0"], axis=1)],
                                        {"ax": _i64(2), "one": np.ones((1, 1, 1, 1), np.float32), "shape": _i64(2, 2, 9, 7)}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_operator_matches_onnxruntime(case, tmp_path):
    nodes, initializers = CASES[case]
    path = tmp_path / f"{case}.onnx"
    onnx.save(_model(nodes, initializers), str(path))
    x = RNG.standard_normal(X_SHAPE).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with torch.inference_mode():
        actual = OnnxTorchModule(plan_from_onnx(path))(torch.from_numpy(x))[0].numpy()
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_an_unknown_operator_is_refused_when_the_module_is_built():
    plan = GraphPlan(["x"], ["y"], [GraphNode("LSTM", ("x",), ("y",))], {})
    with pytest.raises(UnsupportedOperatorError, match="LSTM"):
        OnnxTorchModule(plan)


def test_an_unsupported_mode_is_refused_when_the_module_is_built():
    node = GraphNode("Resize", ("x", "", "", "s"), ("y",), {"mode": "cubic", "coordinate_transformation_mode": "half_pixel"})
    with pytest.raises(UnsupportedOperatorError, match="cubic"):
        OnnxTorchModule(GraphPlan(["x"], ["y"], [node], {"s": _i64(1, 3, 4, 4)}))


def test_reduced_precision_keeps_normalisation_in_float32():
    plan = GraphPlan(["x"], ["y"], [GraphNode("Sub", ("x", "mean"), ("n",)), GraphNode("Conv", ("n", "w"), ("y",), {"kernel_shape": [1, 1]})],
                     {"mean": np.full((1, 1, 1, 1), 100.0, np.float32), "w": np.ones((1, 1, 1, 1), np.float32)})
    module = OnnxTorchModule(plan, compute_dtype=torch.bfloat16)
    assert {str(buffer.dtype) for buffer in module.buffers()} == {"torch.float32", "torch.bfloat16"}
    out = module(torch.full((1, 1, 1, 1), 100.75))[0]
    assert out.dtype == torch.float32 and float(out) == 0.75  # 100.75 in bf16 would be 100.5 or 101
