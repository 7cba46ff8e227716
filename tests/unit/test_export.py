"""The MegEngine -> ONNX converter, the .mge export, and `mspn export`."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import assert_clean_error, requires_lite, run_mspn

import onnx
import onnxruntime as ort

from tests.conftest import skip_module_without_megengine  # noqa: E402

skip_module_without_megengine()
pytestmark = pytest.mark.megengine

from tests.conftest import megengine_idle  # noqa: E402
from mspn_cli.errors import UnsupportedOperatorError  # noqa: E402
from mspn_cli.export.mge import export_mge  # noqa: E402
from mspn_cli.export.onnx import convert_mge_graph, export_onnx  # noqa: E402
from mspn_cli.export.trace import flatten_outputs, trace_and_dump  # noqa: E402
from mspn_cli.export.verify import relative_error  # noqa: E402

mge = megengine_idle()
F = mge.functional
M = mge.module

TOLERANCE = 1e-4


def _randomise_norms(module, seed: int = 0) -> None:
    """Non-trivial batch-norm statistics and conv biases, so folding them is actually tested."""
    rng = np.random.default_rng(seed)

    def fill(tensor, values):
        tensor._reset(mge.tensor(values.astype(np.float32).reshape(tensor.shape)))

    for sub in module.modules():
        if isinstance(sub, M.BatchNorm2d):
            fill(sub.running_mean, rng.normal(0, 0.5, sub.running_mean.shape))
            fill(sub.running_var, rng.uniform(0.5, 1.5, sub.running_var.shape))
            fill(sub.weight, rng.uniform(0.5, 1.5, sub.weight.shape))
            fill(sub.bias, rng.normal(0, 0.5, sub.bias.shape))
        elif isinstance(sub, (M.Conv2d, M.ConvTranspose2d)) and sub.bias is not None:
            fill(sub.bias, rng.normal(0, 0.5, sub.bias.shape))
    module.eval()


class ManyOps(M.Module):
    """A small network touching every operator kind the converter maps."""

    def __init__(self):
        super().__init__()
        self.conv = M.Conv2d(4, 8, 3, 1, 1, groups=2)
        self.bn = M.BatchNorm2d(8)
        self.up = M.ConvTranspose2d(8, 8, 4, 2, 1)
        self.up_bn = M.BatchNorm2d(8)
        self.group_up = M.ConvTranspose2d(8, 4, 3, 2, 1, groups=2)
        self.plain = M.Conv2d(8, 6, 1, bias=False)
        self.plain_bn = M.BatchNorm2d(6)

    def forward(self, x):
        n = x.shape[0]
        y = F.max_pool2d(x, 3, 2, 1)
        y = F.relu(self.bn(self.conv(y)))
        skip = F.vision.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        up = F.relu(self.up_bn(self.up(y)) + skip)
        pooled = F.avg_pool2d(y, 2, 2, mode="average")
        tokens = pooled.reshape(n, 8, -1).transpose(0, 2, 1)
        summed = F.expand_dims(tokens, 1).sum(axis=3, keepdims=True)
        gated = F.sigmoid(pooled[:, 2:6, ::2, 1]) * F.exp(pooled[:, 1:5, ::2, 0]) / 3
        grouped = self.group_up(pooled)
        fixed = F.vision.interpolate(grouped, size=(7, 5), mode="bilinear", align_corners=False)
        like = F.vision.interpolate(grouped, size=up.shape[2:], mode="bilinear", align_corners=False)
        nearest = F.vision.interpolate(grouped, scale_factor=2.0, mode="nearest")
        mean = F.squeeze(F.expand_dims(F.concat([pooled, pooled], axis=1).mean(axis=1, keepdims=True), 0), 0)
        widened = F.broadcast_to(x[:, :1], x.shape) + 1.0
        elementwise = F.maximum(x, 0.3) - F.minimum(x, -0.2) + x ** 2 + F.sqrt(F.abs(x)) * F.tanh(x)
        head = self.plain_bn(self.plain(up))
        spacing = ((0, 0), (0, 0), (1, 2), (3, 0))
        padded = [
            F.nn.pad(y, spacing, mode="constant", constant_value=0.5),
            F.nn.pad(y, spacing, mode="reflect"),
            F.nn.pad(F.relu(y), ((0, 0), (1, 0), (0, 1), (2, 2)), mode="edge"),
        ]
        return [head, summed, gated, fixed, like, nearest, mean, widened, elementwise] + padded


def _traced_reference(module):
    from megengine.jit import trace

    @trace(symbolic=True, capture_as_const=True)
    def forward(batch):
        return flatten_outputs(module(batch))

    return lambda batch: [out.numpy() for out in forward(mge.tensor(batch))]


@pytest.fixture(scope="module")
def many_ops(tmp_path_factory):
    module = ManyOps()
    _randomise_norms(module)
    example = np.random.default_rng(1).normal(size=(2, 4, 16, 16)).astype(np.float32)
    path = export_onnx(
        module, example, tmp_path_factory.mktemp("onnx") / "many.onnx", dynamic_axes={"images": {0: "N", 2: "H", 3: "W"}}
    )
    return module, path


def test_exported_graph_passes_the_onnx_checker(many_ops):
    _, path = many_ops
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= 13
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 4, "H", "W"]


@pytest.mark.parametrize("shape", [(2, 4, 16, 16), (3, 4, 24, 32), (1, 4, 8, 40)])
def test_every_operator_matches_megengine_at_several_shapes(many_ops, shape):
    module, path = many_ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)
    expected = _traced_reference(module)(batch)
    actual = session.run(None, {"images": batch})
    assert len(actual) == len(expected)
    for index, (got, want) in enumerate(zip(actual, expected)):
        assert got.shape == want.shape, index
        assert relative_error(got, want) <= TOLERANCE, (index, relative_error(got, want))


def test_batch_norms_and_biases_are_folded_into_convolutions(many_ops):
    _, path = many_ops
    graph = onnx.load(str(path)).graph
    assert "BatchNormalization" not in [node.op_type for node in graph.node]
    # Every BN here follows a convolution: none is left as a per-channel Mul/Add.
    per_channel = {init.name for init in graph.initializer if len(init.dims) == 4 and init.dims[1] > 1}
    leftovers = [n.op_type for n in graph.node if n.op_type in ("Mul", "Add") and per_channel & set(n.input)]
    assert leftovers == []


class Residual(M.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = M.Conv2d(3, 8, 3, 1, 1), M.BatchNorm2d(8)
        self.c2, self.b2 = M.Conv2d(8, 8, 3, 1, 1, bias=False), M.BatchNorm2d(8)

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + y)


@pytest.mark.parametrize("options", [{}, {"enable_fuse_conv_bias_nonlinearity": True}], ids=["optimized", "conv-bias"])
def test_graphs_optimised_for_inference_convert_too(options):
    # optimize_for_inference fuses add + relu (FUSE_ADD_RELU) and conv + bias + relu (ConvBias).
    module = Residual()
    _randomise_norms(module, seed=3)
    example = np.random.default_rng(2).normal(size=(2, 3, 16, 16)).astype(np.float32)
    traced = trace_and_dump(module, example, optimize=True, **options)
    proto = convert_mge_graph(
        traced.data, input_name="images", output_names=traced.output_names, input_shape=example.shape,
        dynamic_axes={"images": [0, 2, 3]},
    )
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert relative_error(session.run(None, {"images": example})[0], traced.example_outputs[0]) <= TOLERANCE
    other = np.random.default_rng(3).normal(size=(3, 3, 8, 24)).astype(np.float32)
    assert relative_error(session.run(None, {"images": other})[0], _traced_reference(module)(other)[0]) <= TOLERANCE


class Cumulative(M.Module):
    def forward(self, x):
        return F.cumsum(x, axis=1)


class Rounding(M.Module):
    def forward(self, x):
        return F.round(x)


@pytest.mark.parametrize(
    "module, expected", [(Cumulative(), "Cumsum"), (Rounding(), "Elemwise mode ROUND")], ids=["operator", "mode"]
)
def test_unknown_operator_raises_a_clear_error(module, expected, tmp_path):
    target = tmp_path / "unsupported.onnx"
    with pytest.raises(UnsupportedOperatorError, match=expected) as info:
        export_onnx(module, np.ones((1, 3, 4, 4), np.float32), target, dynamic_axes={"images": [0]})
    assert "not supported" in str(info.value)
    assert not target.exists()


def test_padding_needs_the_traced_parameters():
    # A .mge dump hides Padding's offsets from MegEngine's graph API: converting the
    # bare dump must refuse rather than guess.
    class Padded(M.Module):
        def forward(self, x):
            return F.nn.pad(x, ((0, 0), (0, 0), (1, 1), (2, 0)))

    example = np.ones((1, 3, 4, 4), np.float32)
    traced = trace_and_dump(Padded(), example)
    (recorded,) = traced.hidden_params["PaddingForward"]
    assert (recorded["front_offset_dim2"], recorded["back_offset_dim2"], recorded["front_offset_dim3"]) == (1, 1, 2)
    with pytest.raises(UnsupportedOperatorError, match="not readable from a dumped graph"):
        convert_mge_graph(traced.data, input_name="images", output_names=traced.output_names,
                          input_shape=example.shape, dynamic_axes={})


@requires_lite
def test_mge_export_runs_in_megengine_lite_at_other_batch_sizes(tmp_path):
    from mspn_cli.runtime.lite_backend import load_lite_network

    module = Residual()
    _randomise_norms(module, seed=4)
    path = export_mge(module, np.zeros((1, 3, 16, 16), np.float32), tmp_path / "residual.mge")
    runner = load_lite_network(path)
    reference = _traced_reference(module)
    for shape in [(1, 3, 16, 16), (4, 3, 16, 16)]:
        batch = np.random.default_rng(shape[0]).normal(size=shape).astype(np.float32)
        assert relative_error(runner.run(batch)[0], reference(batch)[0]) <= TOLERANCE


def test_export_errors_are_not_usage_errors():
    from mspn_cli.errors import EXIT_INTERNAL, ExportError, UsageError

    # A converter that cannot express a graph is the exporter's limit, not a bad option.
    for error in (ExportError, UnsupportedOperatorError):
        assert not issubclass(error, UsageError)
        assert error.exit_code == EXIT_INTERNAL


def test_export_help_states_the_tolerances_used():
    from mspn_cli.export.verify import MGE_LITE_TOLERANCE, ONNX_TOLERANCE

    proc = run_mspn("export", "--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert f"at most {ONNX_TOLERANCE:.0e} relative error for onnx, {MGE_LITE_TOLERANCE:.0e} for mge" in text
    assert "1e-3 relative" not in text


def test_the_export_room_imports_no_backend_and_no_circle():
    import subprocess
    import sys

    probe = (
        "import sys, mspn_cli.export.cache, mspn_cli.export.onnx, mspn_cli.export.verify, mspn_cli.export.mge;"
        "print(sorted(m for m in sys.modules if m.startswith('mspn_cli.runtime')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
