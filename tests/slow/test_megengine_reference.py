"""The reference world writes MegEngine's outputs for backends tested where MegEngine cannot
run (tests/reference_outputs.py): .ci/run runs this in its Python 3.10 world first."""

import pytest

from tests.conftest import skip_module_without_megengine
from tests.reference_outputs import NETWORKS, load_outputs, megengine_outputs, reference_file, save_outputs

skip_module_without_megengine()
pytestmark = pytest.mark.megengine


@pytest.mark.parametrize("which", NETWORKS)
def test_megengine_reference_outputs_are_written(which, mspn_weights, detector_weights):
    path = reference_file(which)
    if path is None:
        pytest.skip("set MSPN_CROSS_WORLD_DIR (.ci/run does) to write MegEngine's reference outputs")
    outputs = megengine_outputs(which, mspn_weights, detector_weights)
    save_outputs(path, outputs)
    assert [o.shape for o in load_outputs(path)] == [o.shape for o in outputs]
