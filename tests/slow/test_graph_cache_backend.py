"""A real exported backend with an unusable $MSPN_HOME: one warning, the run works, nothing left in the temp dir."""

from __future__ import annotations

import logging
import tempfile

import numpy as np
import pytest

import onnxruntime  # noqa: F401 - a hard dependency: a broken install fails here, it never skips

from tests.conftest import skip_module_without_megengine  # noqa: E402

skip_module_without_megengine()
pytestmark = pytest.mark.megengine

from tests.conftest import megengine_idle  # noqa: E402
from mspn_cli.runtime import create_backend  # noqa: E402
from mspn_cli.weights import store  # noqa: E402

mge = megengine_idle()
M = mge.module


class Tiny(M.Module):
    def __init__(self):
        super().__init__()
        self.conv = M.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


@pytest.fixture()
def unusable_home(tmp_path, monkeypatch):
    home = tmp_path / "home_is_a_file"
    home.write_text("not a folder")
    monkeypatch.setenv("MSPN_HOME", str(home))
    monkeypatch.setattr(store, "_USABLE_ROOTS", {})
    systemtmp = tmp_path / "systemtmp"
    systemtmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systemtmp))
    return systemtmp


@pytest.mark.parametrize("fallback_blocked", [False, True], ids=["per_user_fallback", "no_cache_at_all"])
def test_unusable_home_exports_once_and_leaves_no_temporary_folders(unusable_home, caplog, fallback_blocked):
    if fallback_blocked:
        (unusable_home / store._private_temp_root().name).write_text("blocked")
    model = Tiny()
    model.eval()
    batch = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    expected = create_backend("megengine", model).run(batch)
    with caplog.at_level(logging.WARNING):
        backend = create_backend("onnxruntime", model, input_shape=(1, 3, 8, 8), dynamic_axes={0: "N"})
        np.testing.assert_allclose(backend.run(batch)[0], expected[0], rtol=1e-4, atol=1e-5)
    unusable = [r for r in caplog.records if "(MSPN_HOME) is unusable" in r.getMessage()]
    assert len(unusable) == 1
    leftovers = sorted(p.name for p in unusable_home.iterdir() if p.name.startswith("mspn-graph-"))
    assert leftovers == []
    if not fallback_blocked:  # the graph was cached in the per-user folder and is reused
        again = create_backend("onnxruntime", model, input_shape=(1, 3, 8, 8), dynamic_axes={0: "N"})
        assert not again.exported and again.graph_path == backend.graph_path
