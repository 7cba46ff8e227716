"""--precision plumbing on any CPU: the bf16 criteria, the cached verdict, the refusals, the precision read back.

OpenVINO itself is replaced by stand-ins (a compiled model that reports a precision and
returns arrays), so no verdict here depends on this machine's CPU or on a network's output.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mspn_cli.errors import UsageError
from mspn_cli.export.specs import InputSpec
from mspn_cli.runtime import network, openvino_backend
from mspn_cli.runtime.cpu_features import CpuFeatures, parse_cpuinfo
from mspn_cli.runtime.precision import bf16_verdict, compare_precisions, verification_batch
from mspn_cli.settings import RunSettings


def peaked_maps(count=6, height=16, width=12, seed=0):
    """Heatmap-like maps: one clear Gaussian peak each, at known places."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    maps = np.zeros((1, count, height, width), dtype=np.float32)
    for c in range(count):
        y, x = rng.integers(2, height - 2), rng.integers(2, width - 2)
        maps[0, c] = 100 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 4.0)
    return maps


# ----------------------------------------------------------------------------- the criteria


def test_small_rounding_errors_pass():
    reference = peaked_maps()
    noise = np.random.default_rng(1).uniform(-0.8, 0.8, reference.shape).astype(np.float32)  # <= 0.8% of the range
    result = compare_precisions([reference], [reference + noise])
    assert result.passed, result.problems
    assert result.prominent_maps == 6 and result.peaks_agreeing == 6
    assert 0 < result.worst_error <= 0.008 + 1e-6


def test_garbage_fails():
    reference = peaked_maps()
    garbage = np.random.default_rng(2).uniform(0, 100, reference.shape).astype(np.float32)
    result = compare_precisions([reference], [garbage])
    assert not result.passed
    assert any("worst map" in problem for problem in result.problems)


def test_moved_peaks_fail_even_when_the_error_is_small():
    reference = peaked_maps(height=16, width=12)
    moved = reference.copy()
    for c in range(reference.shape[1]):  # a second peak, 3 px away, just above the first
        y, x = np.unravel_index(np.argmax(reference[0, c]), reference.shape[2:])
        moved[0, c, (y + 3) % 16, x] = reference[0, c, y, x] + 1.0
    result = compare_precisions([reference], [moved])
    assert result.prominent_maps == 6 and result.peaks_agreeing == 0
    assert any("prominent peaks" in problem for problem in result.problems)


def test_flat_maps_are_not_counted_as_prominent():
    flat = np.full((1, 3, 8, 8), 5.0, dtype=np.float32)
    flat[0, :, 0, 0] = 5.001  # the maximum...
    flat[0, :, 4, 4] = 5.001  # ...and an equal value outside its 3x3 neighbourhood: no peak stands out
    result = compare_precisions([flat], [flat])
    assert result.prominent_maps == 0 and result.passed


def test_non_finite_and_misshaped_outputs_fail():
    reference = peaked_maps()
    broken = reference.copy()
    broken[0, 0, 0, 0] = np.nan
    assert not compare_precisions([reference], [broken]).passed
    assert not compare_precisions([reference], [reference[:, :3]]).passed
    assert not compare_precisions([reference], []).passed


def test_the_verification_batch_is_deterministic_and_image_like():
    first, second = verification_batch((2, 3, 32, 24)), verification_batch((2, 3, 32, 24))
    assert first.shape == (2, 3, 32, 24) and first.dtype == np.float32
    assert np.array_equal(first, second)
    assert -2.2 < first.min() and first.max() < 2.7 and first.std() > 0.1


# ----------------------------------------------------------------------------- the cached verdict


def _never(_batch):
    raise AssertionError("a cached verdict must not run the networks again")


def test_a_verdict_is_cached_per_key_and_reused(tmp_path):
    key = {"cpu_model": "Test CPU", "cpu_flags": ["amx_bf16"], "openvino": "1", "graph": "g.onnx"}
    reference = [peaked_maps()]
    batch = verification_batch((1, 3, 8, 8))
    calls = []

    def run_reference(b):
        calls.append("fp32")
        return reference

    first = bf16_verdict(tmp_path, key, run_reference, lambda b: reference, batch)
    assert first.passed and calls == ["fp32"]
    again = bf16_verdict(tmp_path, key, _never, _never, batch)
    assert again.passed and again.reason == first.reason
    other_cpu = dict(key, cpu_model="Another CPU")
    bf16_verdict(tmp_path, other_cpu, run_reference, lambda b: reference, batch)
    assert calls == ["fp32", "fp32"]  # another CPU is checked on its own


def test_a_failed_verdict_is_cached_too(tmp_path):
    key = {"cpu_model": "Zen 5", "cpu_flags": ["avx512_bf16"], "openvino": "1", "graph": "g.onnx"}
    reference = [peaked_maps()]
    garbage = [np.zeros_like(reference[0])]
    failed = bf16_verdict(tmp_path, key, lambda b: reference, lambda b: garbage, verification_batch((1, 3, 8, 8)))
    assert not failed.passed
    files = list(tmp_path.glob("bf16-verdict-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["passed"] is False
    assert not bf16_verdict(tmp_path, key, _never, _never, verification_batch((1, 3, 8, 8))).passed


# ----------------------------------------------------------------------------- the backend, with a stand-in OpenVINO


class FakeType:
    def __init__(self, name):
        self.name = name

    def to_string(self):
        return self.name


class FakeCompiled:
    """What OpenVINO's compiled model offers the backend: its precision and inference."""

    def __init__(self, precision, produce):
        self.precision = precision
        self.produce = produce
        self.outputs = ["heatmaps"]

    def get_property(self, name):
        assert name == "INFERENCE_PRECISION_HINT"
        return FakeType(self.precision)

    def create_infer_request(self):
        compiled = self

        class Request:
            def infer(self, inputs, share_inputs=False, share_outputs=False):
                return {"heatmaps": compiled.produce(inputs[0])}

        return Request()


def heatmaps_of(batch):
    return np.repeat(peaked_maps(count=4), len(batch), axis=0)


@pytest.fixture()
def fake_openvino(monkeypatch):
    """OpenVINO 'installed' on a bf16 CPU; `compiled[precision]` says what each compile reports and returns."""
    compiles = []
    behaviour = {"f32": ("f32", heatmaps_of), "bf16": ("bf16", heatmaps_of)}

    def compile_graph(path, precision, threads, cache_dir):
        compiles.append(precision)
        reported, produce = behaviour[{"fp32": "f32", "bf16": "bf16"}[precision]]
        return FakeCompiled(reported, produce)

    monkeypatch.setattr(openvino_backend, "openvino_can_run", lambda device="cpu": True)
    monkeypatch.setattr(openvino_backend, "compile_graph", compile_graph)
    monkeypatch.setattr(openvino_backend, "bf16_support", lambda: None)
    monkeypatch.setattr(openvino_backend, "openvino_version", lambda: "test")
    monkeypatch.setattr(openvino_backend, "cpu_features", lambda: CpuFeatures("Test CPU", frozenset({"amx_bf16"})))
    return compiles, behaviour


SPEC = InputSpec.make((1, 3, 16, 12), {0: "N"})


def test_the_precision_is_read_back_from_the_compiled_model(fake_openvino, tmp_path):
    compiles, _ = fake_openvino
    backend = openvino_backend.OpenVinoBackend.from_onnx_graph(tmp_path / "g.onnx", SPEC, precision="fp32", cache_dir=tmp_path)
    assert backend.precision == "fp32" and compiles == ["fp32"]
    assert backend.run(np.zeros((2, 3, 16, 12), np.float32))[0].shape == (2, 4, 16, 12)


def test_a_model_compiled_for_another_precision_is_refused(fake_openvino, tmp_path):
    _, behaviour = fake_openvino
    behaviour["f32"] = ("bf16", heatmaps_of)  # OpenVINO ignoring the f32 we forced
    with pytest.raises(UsageError, match="compiled g.onnx for bf16"):
        openvino_backend.OpenVinoBackend.from_onnx_graph(tmp_path / "g.onnx", SPEC, precision="fp32", cache_dir=tmp_path)


def test_bf16_is_checked_once_then_the_verdict_is_reused(fake_openvino, tmp_path):
    compiles, _ = fake_openvino
    first = openvino_backend.OpenVinoBackend.from_onnx_graph(tmp_path / "g.onnx", SPEC, precision="bf16", cache_dir=tmp_path)
    assert first.precision == "bf16"
    assert compiles == ["bf16", "fp32"]  # the fp32 reference is compiled for the check only
    again = openvino_backend.OpenVinoBackend.from_onnx_graph(tmp_path / "g.onnx", SPEC, precision="bf16", cache_dir=tmp_path)
    assert again.precision == "bf16" and compiles == ["bf16", "fp32", "bf16"]


def test_a_failed_check_refuses_bf16_now_and_later(fake_openvino, tmp_path):
    compiles, behaviour = fake_openvino
    behaviour["bf16"] = ("bf16", lambda batch: np.zeros_like(heatmaps_of(batch)))  # a broken bf16 kernel
    for _ in range(2):
        with pytest.raises(UsageError, match="failed its check against fp32 on this CPU"):
            openvino_backend.OpenVinoBackend.from_onnx_graph(tmp_path / "g.onnx", SPEC, precision="bf16", cache_dir=tmp_path)
    assert compiles.count("fp32") == 1  # the second refusal came from the cached verdict


def test_a_cpu_without_native_bf16_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setattr(openvino_backend, "cpu_features", lambda: parse_cpuinfo("model name : Old CPU\nflags : fpu avx2 fma\n"))

    class Core:
        def get_property(self, device, name):
            return ["FP32", "INT8"]

    monkeypatch.setattr(openvino_backend, "openvino_core", lambda: Core())
    assert "neither AMX nor AVX512_BF16" in openvino_backend.bf16_support()
    with pytest.raises(UsageError, match=r"--precision bf16 cannot run here: this CPU \(Old CPU\) has neither"):
        openvino_backend.check_precision_runs("bf16")
    assert openvino_backend.check_precision_runs("fp32") == "fp32"


def test_openvino_is_asked_where_the_cpu_flags_cannot_be_read(monkeypatch):
    monkeypatch.setattr(openvino_backend, "cpu_features", lambda: CpuFeatures("Mac", frozenset(), flags_known=False))

    class Core:
        def __init__(self, capabilities):
            self.capabilities = capabilities

        def get_property(self, device, name):
            return self.capabilities

    monkeypatch.setattr(openvino_backend, "openvino_core", lambda: Core(["FP32", "BF16"]))
    assert openvino_backend.bf16_support() is None
    monkeypatch.setattr(openvino_backend, "openvino_core", lambda: Core(["FP32"]))
    assert "no native bf16" in openvino_backend.bf16_support()


# ----------------------------------------------------------------------------- choosing the backend


def test_fp32_keeps_the_backend_asked_for():
    for name in ("auto", "onnxruntime", "megengine", "openvino"):
        assert network.backend_for_precision(name, "fp32") == name


def test_bf16_refuses_backends_that_compute_in_fp32_only():
    with pytest.raises(UsageError, match="--precision bf16 does not run on the onnxruntime backend; use --backend openvino"):
        network.backend_for_precision("onnxruntime", "bf16")
    with pytest.raises(UsageError, match="--precision fp16 does not run on the megengine backend"):
        network.backend_for_precision("megengine", "fp16")
    with pytest.raises(UsageError, match="--precision must be one of"):
        network.backend_for_precision("auto", "fp8")


def test_bf16_with_auto_means_openvino_and_its_checks(monkeypatch):
    import mspn_cli.runtime as runtime

    monkeypatch.setattr(runtime, "available_backends", lambda device="cpu": ["onnxruntime"])
    with pytest.raises(UsageError, match="runs on the openvino backend, which is not installed"):
        network.backend_for_precision("auto", "bf16")
    monkeypatch.setattr(runtime, "available_backends", lambda device="cpu": ["openvino", "onnxruntime"])
    monkeypatch.setattr(openvino_backend, "bf16_support", lambda: None)
    assert network.backend_for_precision("auto", "bf16") == "openvino"
    monkeypatch.setattr(openvino_backend, "bf16_support", lambda: "no bf16 here")
    with pytest.raises(UsageError, match="cannot run here: no bf16 here"):
        network.backend_for_precision("auto", "bf16")


# ----------------------------------------------------------------------------- settings, actors


def test_run_settings_carry_the_precision_to_workers_and_actors():
    settings = RunSettings(precision="bf16", backend="auto")
    data = json.loads(json.dumps(settings.to_dict()))  # what a Ray actor or an eval worker receives
    assert data["precision"] == "bf16"
    assert RunSettings.from_dict(data).precision == "bf16"
    assert RunSettings().precision == "fp32"
    with pytest.raises(UsageError, match="--precision must be one of fp32, bf16, fp16"):
        RunSettings(precision="int8")


def test_cpuinfo_flags_name_the_features_users_know():
    cpu = parse_cpuinfo("processor : 0\nmodel name : Xeon\nflags : avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert cpu.summary() == {"AVX2": True, "AVX-512": True, "AVX512_BF16": True, "AMX": True}
    assert cpu.native_bf16 is True
    zen3 = parse_cpuinfo("model name : EPYC\nflags : avx2 fma\n")
    assert zen3.summary() == {"AVX2": True, "AVX-512": False, "AVX512_BF16": False, "AMX": False}
    assert zen3.native_bf16 is False
    assert CpuFeatures("?", frozenset(), flags_known=False).native_bf16 is None


def test_a_few_rough_small_maps_pass_but_many_fail():
    reference = np.concatenate([peaked_maps(count=6, seed=s) for s in range(50)], axis=1)  # 300 maps
    candidate = reference + np.random.default_rng(3).uniform(-0.8, 0.8, reference.shape).astype(np.float32)
    candidate[0, :2] += 7.0 * (np.arange(16 * 12).reshape(16, 12) % 2)  # 2 maps off by 7% of their range
    assert compare_precisions([reference], [candidate]).passed
    candidate[0, :30] += 7.0 * (np.arange(16 * 12).reshape(16, 12) % 2)  # 10% of the maps: not rounding any more
    result = compare_precisions([reference], [candidate])
    assert any("1% of the maps" in problem for problem in result.problems)
