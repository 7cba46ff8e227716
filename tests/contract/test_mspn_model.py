"""Contract tests for the MSPN network: state-dict manifest, output shapes, tracing."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import REFERENCE


def _manifest(name):
    rows = []
    for line in (REFERENCE / name).read_text().splitlines():
        key, shape, dtype = line.split("\t")
        rows.append((key, tuple(int(v) for v in shape.split(",")) if shape else (), dtype))
    return rows


@pytest.fixture(scope="module")
def mspn():
    from mspn_cli.models import build_model

    return build_model("mspn_4stage")


@pytest.mark.megengine
def test_state_dict_matches_official_manifest_line_by_line(mspn):
    expected = _manifest("mspn_4stage.manifest.tsv")
    actual = [(k, tuple(np.asarray(v).shape), str(np.asarray(v).dtype)) for k, v in mspn.state_dict().items()]
    assert len(expected) == 1456
    assert len(actual) == len(expected)
    for line, (want, got) in enumerate(zip(expected, actual), start=1):
        assert got == want, f"manifest line {line}: expected {want}, model has {got}"


def test_registry_rejects_unknown_model():
    from mspn_cli.errors import ConfigError
    from mspn_cli.models import available_models, build_model

    assert "mspn_4stage" in available_models()
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("mspn_5stage")


@pytest.mark.megengine
def test_forward_returns_final_heatmaps_and_trace_matches_eager(mspn):
    from mspn_cli._mge import import_megengine
    from mspn_cli.runtime.megengine_backend import MegEngineBackend

    mge = import_megengine()
    x = np.random.default_rng(0).normal(size=(2, 3, 256, 192)).astype(np.float32)
    eager = mspn(mge.tensor(x)).numpy()
    assert eager.shape == (2, 17, 64, 48)
    all_outputs = mspn.forward_all(mge.tensor(x))
    assert len(all_outputs) == 4 and all(len(stage) == 4 for stage in all_outputs)
    assert all(h.shape == (2, 17, 64, 48) for stage in all_outputs for h in stage)
    # The prediction is the last stage's largest scale.
    np.testing.assert_array_equal(all_outputs[3][3].numpy(), eager)

    backend = MegEngineBackend(mspn, device="cpu")
    traced = backend.run(x)[0]
    np.testing.assert_allclose(traced, eager, rtol=1e-5, atol=1e-5)
    # A different batch size reuses the same traced function.
    single = backend.run(x[:1])[0]
    np.testing.assert_allclose(single, eager[:1], rtol=1e-4, atol=1e-4)
