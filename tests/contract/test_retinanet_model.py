"""RetinaNet network: state-dict layout, output layout, tracing, in-graph normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import skip_module_without_megengine  # noqa: E402

skip_module_without_megengine()
pytestmark = pytest.mark.megengine

from mspn_cli.models import build_model  # noqa: E402
from tests.conftest import REFERENCE, megengine_idle  # noqa: E402
from tests.weightgen import random_state_dict

mge = megengine_idle()
# mspn_cli.models.retinanet is imported inside the tests that use it: importing it runs MegEngine's
# first operation (models/resnet.py), which would start its polling thread during collection.

MANIFEST = REFERENCE / "retinanet_res50_coco_3x_800size.manifest.tsv"
SMALL_INPUT = (1, 3, 128, 160)
SMALL_LEVEL_SIZES = [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]


@pytest.fixture(scope="module")
def model():
    net = build_model("retinanet_res50_coco_3x_800size")
    net.load_state_dict(random_state_dict(net, seed=3, legacy_shapes=False), strict=True)
    net.eval()
    return net


def _raw_image(shape, seed=0, valid=None):
    """Random raw BGR pixels; outside `valid` (h, w) the image is zero padding."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 255, size=shape).astype(np.float32)
    if valid is not None:
        image[..., valid[0]:, :] = 0
        image[..., :, valid[1]:] = 0
    return image


def _numpy_outputs(outputs):
    logits, offsets = outputs
    return [level.numpy() for level in logits], [level.numpy() for level in offsets]


def test_state_dict_equals_official_manifest(model):
    expected = [line.rstrip("\n").split("\t") for line in MANIFEST.read_text().splitlines() if line.strip()]
    actual = [
        [key, ",".join(str(d) for d in np.asarray(value).shape), str(np.asarray(value).dtype)]
        for key, value in model.state_dict().items()
    ]
    assert len(actual) == len(expected) == 301
    for line_number, (mine, official) in enumerate(zip(actual, expected), start=1):
        assert mine == official, f"manifest line {line_number}"


def test_pixel_statistics_are_not_state(model):
    from mspn_cli.models.retinanet import RetinaNet

    other = RetinaNet(mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0))
    assert list(other.state_dict()) == list(model.state_dict())
    assert not any("mean" in key and "running" not in key for key in model.state_dict())


def test_output_levels_and_shapes(model):
    logits, offsets = _numpy_outputs(model(mge.tensor(_raw_image(SMALL_INPUT))))
    assert [l.shape for l in logits] == [(1, 720, h, w) for h, w in SMALL_LEVEL_SIZES]
    assert [o.shape for o in offsets] == [(1, 36, h, w) for h, w in SMALL_LEVEL_SIZES]
    assert all(l.dtype == np.float32 and np.isfinite(l).all() for l in logits + offsets)


def test_batch_images_are_independent(model):
    pair = np.concatenate([_raw_image(SMALL_INPUT, seed=1), _raw_image(SMALL_INPUT, seed=2)])
    batch_logits, batch_offsets = _numpy_outputs(model(mge.tensor(pair)))
    single_logits, single_offsets = _numpy_outputs(model(mge.tensor(pair[1:])))
    for batched, single in zip(batch_logits + batch_offsets, single_logits + single_offsets):
        np.testing.assert_allclose(batched[1:], single, rtol=1e-4, atol=1e-4)


def test_traced_graph_matches_eager_for_several_sizes(model):
    from mspn_cli.models.retinanet import RetinaNet

    from megengine.jit import trace

    @trace(symbolic=True, capture_as_const=True)
    def traced(images):
        return model.forward_flat(images)

    # Re-running a traced function with new shapes must not reuse stale sizes
    # (the FPN upsampling target is read from the tensors).
    for shape in [SMALL_INPUT, (2, 3, 96, 128), SMALL_INPUT]:
        images = mge.tensor(_raw_image(shape, seed=shape[2]))
        traced_logits, traced_offsets = RetinaNet.split_flat_outputs(traced(images))
        eager_logits, eager_offsets = _numpy_outputs(model(images))
        assert len(traced_logits) == len(traced_offsets) == 5
        for got, want in zip(traced_logits + traced_offsets, eager_logits + eager_offsets):
            assert got.shape == want.shape
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)


def test_normalisation_happens_inside_the_network(model):
    from mspn_cli.models.retinanet import DETECTOR_PIXEL_MEAN, DETECTOR_PIXEL_STD, RetinaNet

    # Raw pixels with a zero-padded bottom/right border, as prepare_detector_batch makes.
    raw = _raw_image(SMALL_INPUT, seed=4, valid=(100, 130))
    mean = np.asarray(DETECTOR_PIXEL_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(DETECTOR_PIXEL_STD, np.float32).reshape(1, 3, 1, 1)
    normalised = (raw - mean) / std  # padding becomes -mean/std, not 0

    identity = RetinaNet(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    identity.load_state_dict(model.state_dict(), strict=True)
    identity.eval()

    from_raw = _numpy_outputs(model(mge.tensor(raw)))
    from_normalised = _numpy_outputs(identity(mge.tensor(normalised)))
    for got, want in zip(from_raw[0] + from_raw[1], from_normalised[0] + from_normalised[1]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

    # Normalising outside as well (or padding with 0 after normalising) is a different input.
    pad_zero_after = normalised.copy()
    pad_zero_after[..., 100:, :] = 0
    pad_zero_after[..., :, 130:] = 0
    wrong = _numpy_outputs(identity(mge.tensor(pad_zero_after)))
    assert not np.allclose(wrong[0][0], from_raw[0][0], rtol=1e-4, atol=1e-4)
