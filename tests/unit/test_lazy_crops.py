"""Crops are cut and heatmaps decoded per batch, so memory is bounded by --batch-size
whatever the box count (issue 15, item 11).

Before, every crop of an image was cut at once: 5,000 boxes on one image held 4.5 GB of
crops before the first forward pass, and all its heatmaps (1 GB for 5,000 persons) were
kept until the image was decoded. A stand-in backend records, at each forward pass, how
many crops have been cut so far (counted at cv2.warpAffine, the one place a crop is made)
against how many it has been given; the difference is the crops held waiting. The
decoder is watched the same way: it must never receive more than one batch of heatmaps.
"""

from __future__ import annotations

import numpy as np
import pytest

import mspn_cli.pose.preprocess as preprocess
from mspn_cli.detection.result import Detections
from mspn_cli.pipeline import PipelineItem, PosePipeline
from mspn_cli.pose.estimator import PoseEstimator

BOXES = 2_000  # enough to be 250 batches; decoding each person's 17 maps dominates the test's time


class CountingBackend:
    """Zero heatmaps; notes, at each call, the crops cut so far and the crops run so far."""

    name = "counting"

    def __init__(self, cuts: list):
        self.cuts = cuts
        self.run_so_far = 0
        self.batch_sizes = []
        self.waiting = []  # crops cut but not yet run, seen at each forward pass

    def run(self, batch):
        batch = np.asarray(batch)
        self.batch_sizes.append(len(batch))
        self.waiting.append(self.cuts[0] - self.run_so_far)
        self.run_so_far += len(batch)
        return [np.zeros((len(batch), 17, 64, 48), np.float32)]


@pytest.fixture()
def decoded_sizes(monkeypatch):
    import mspn_cli.pose.estimator as estimator_module

    sizes = []
    real = estimator_module.decode_heatmaps

    def counting_decode(heatmaps, *args, **kwargs):
        sizes.append(len(heatmaps))
        return real(heatmaps, *args, **kwargs)

    monkeypatch.setattr(estimator_module, "decode_heatmaps", counting_decode)
    return sizes


@pytest.fixture()
def counted_warps(monkeypatch):
    cuts = [0]
    real = preprocess.cv2.warpAffine

    def counting_warp(*args, **kwargs):
        cuts[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(preprocess.cv2, "warpAffine", counting_warp)
    return cuts


def _many_boxes(count: int, rng: np.random.Generator) -> Detections:
    xy = rng.uniform(0, 200, (count, 2))
    wh = rng.uniform(5, 60, (count, 2))
    return Detections(np.concatenate([xy, xy + wh], axis=1).astype(np.float32), rng.uniform(0.1, 1, count).astype(np.float32))


@pytest.mark.parametrize("batch_size", [8, 13])
def test_crops_held_are_bounded_by_the_batch_size(counted_warps, decoded_sizes, batch_size):
    backend = CountingBackend(counted_warps)
    estimator = PoseEstimator(backend=backend, flip=False, batch_size=batch_size)
    image = np.full((240, 320, 3), 128, np.uint8)
    detections = _many_boxes(BOXES, np.random.default_rng(11))
    results = list(PosePipeline(estimator).run([PipelineItem("one", image, detections)]))

    assert len(results) == 1 and len(results[0][1]) == BOXES
    assert backend.run_so_far == counted_warps[0] == BOXES  # every crop cut once and run once
    assert max(backend.batch_sizes) <= batch_size
    assert max(backend.waiting) <= batch_size, f"up to {max(backend.waiting)} crops held at once"
    assert sum(decoded_sizes) == BOXES and max(decoded_sizes) <= batch_size, f"heatmaps of {max(decoded_sizes)} persons held at once"


def test_decoding_per_batch_gives_the_same_bits_as_one_call():
    rng = np.random.default_rng(13)
    image = rng.integers(0, 255, (160, 200, 3), dtype=np.uint8)
    detections = _many_boxes(40, rng)

    class RandomMaps:
        name = "random"

        def run(self, batch):
            batch = np.asarray(batch)
            # Heatmaps that depend on the crop only, so the batching cannot change them.
            seeds = [int(abs(crop).sum() * 1000) % (2 ** 32) for crop in batch]
            return [np.stack([np.random.default_rng(seed).uniform(-10, 255, (17, 64, 48)) for seed in seeds]).astype(np.float32)]

    def keypoints(batch_size):
        estimator = PoseEstimator(backend=RandomMaps(), flip=False, batch_size=batch_size)
        (_, result), = PosePipeline(estimator).run([PipelineItem("one", image, detections)])
        return result.keypoints

    np.testing.assert_array_equal(keypoints(3), keypoints(40))


def test_flip_doubles_the_batch_not_the_crops_held(counted_warps):
    backend = CountingBackend(counted_warps)
    estimator = PoseEstimator(backend=backend, flip=True, batch_size=8)
    image = np.full((120, 160, 3), 128, np.uint8)
    detections = _many_boxes(300, np.random.default_rng(12))
    (_, result), = PosePipeline(estimator).run([PipelineItem("one", image, detections)])
    assert len(result) == 300
    assert max(backend.batch_sizes) <= 16  # 8 persons and their mirrored crops
    # Each forward pass holds at most one batch of crops: the cut ones minus the persons run.
    persons_run = np.cumsum([0] + [size // 2 for size in backend.batch_sizes[:-1]])
    cut_at_call = np.asarray(backend.waiting) + np.cumsum([0] + backend.batch_sizes[:-1])
    assert (cut_at_call - persons_run).max() <= 8


@pytest.mark.parametrize("streaming,expected", [(False, [4, 4, 3]), (True, [3, 4, 3, 1])])
def test_persons_of_later_images_fill_the_batch_unless_streaming(streaming, expected):
    """Files: persons of several images share a forward pass (11 persons, batch 4: 4, 4, 3).
    A live source: each frame is run before the next is read, and a frame's batch does not
    shrink the next frame's (3, 4, 3 and 1 persons: a batch of 4 for the second frame)."""
    backend = CountingBackend([0])
    estimator = PoseEstimator(backend=backend, batch_size=4, flip=False)
    image = np.zeros((120, 100, 3), np.uint8)
    counts = [3, 4, 3, 1]
    items = [(index, image, Detections(np.tile([[10, 10, 60, 90]], (count, 1)), None))
             for index, count in enumerate(counts)]
    keys = [key for key, result in estimator.estimate_many(items, streaming=streaming)]
    assert keys == [0, 1, 2, 3]
    assert backend.batch_sizes == expected
