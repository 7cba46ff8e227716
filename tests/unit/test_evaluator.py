"""KeypointEvaluator and hub.load without networks: argument forms, the extra person NMS, drawing, refusals."""

from __future__ import annotations

import numpy as np
import pytest

import mspn_cli
from mspn_cli.detection.detector import PersonDetector
from mspn_cli.detection.postprocess import nms
from mspn_cli.detection.result import Detections
from mspn_cli.errors import UsageError
from mspn_cli.evaluator import KeypointEvaluator
from mspn_cli.hub import HubModel
from mspn_cli.pose.estimator import PoseEstimator


class _GivenPersons(PersonDetector):
    """A detector whose output is fixed: what detect_persons does after the detector, alone."""

    def __init__(self, rows):
        self.rows = np.asarray(rows, np.float32).reshape(-1, 5)

    def detect(self, image_bgr):
        return Detections.from_array(self.rows)


class _NoNetwork(PoseEstimator):
    def __init__(self):
        pass


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_detect_persons_applies_the_official_person_nms_at_0_7():
    base = [0, 0, 100, 100, 0.9]
    heavy = [0, 0, 100, 120, 0.8]  # IoU 0.833 with base: removed at 0.7
    light = [0, 0, 100, 150, 0.7]  # IoU 0.667 with base: kept
    assert _iou(base, heavy) > 0.7 > _iou(base, light) > 0.5
    evaluator = KeypointEvaluator(_GivenPersons([base, heavy, light]), _NoNetwork())
    persons = evaluator.detect_persons(np.zeros((200, 200, 3), np.uint8))
    assert persons.dtype == np.float32 and persons.shape == (2, 5)
    np.testing.assert_array_equal(persons, np.float32([base, light]))


def test_after_class_nms_at_0_5_the_extra_nms_at_0_7_changes_nothing():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 300, (400, 2))
    rows = np.concatenate([corners, corners + rng.uniform(5, 120, (400, 2)), rng.uniform(0.05, 1, (400, 1))], axis=1)
    rows = rows.astype(np.float32)
    kept = rows[nms(rows[:, :4], rows[:, 4], 0.5)]  # what the detector's per-class NMS leaves
    evaluator = KeypointEvaluator(_GivenPersons(kept), _NoNetwork())
    np.testing.assert_array_equal(evaluator.detect_persons(np.zeros((8, 8, 3), np.uint8)), kept)


def test_the_seeds_four_argument_form_ignores_the_traced_functions():
    detector, model = _GivenPersons([]), _NoNetwork()
    evaluator = KeypointEvaluator(detector, object(), HubModel("mspn_4stage", model), object())
    assert evaluator.detector is detector and evaluator.model is model
    with pytest.raises(TypeError):
        KeypointEvaluator(detector, None, model)
    with pytest.raises(TypeError):
        KeypointEvaluator(model, detector)  # the detector comes first
    assert evaluator.predict(np.zeros((8, 8, 3), np.uint8), np.zeros((0, 5))) == []


def test_vis_skeletons_draws_limbs_on_a_copy():
    image = np.full((200, 200, 3), 40, np.uint8)
    person = np.zeros((17, 3), np.float32)
    person[:, 0] = np.linspace(50, 150, 17)
    person[:, 1] = np.linspace(40, 180, 17)
    person[:, 2] = 1.9  # confidence 0.9
    canvas = KeypointEvaluator.vis_skeletons(image, [person])
    assert canvas.shape == image.shape and (image == 40).all()
    assert (canvas != 40).any(axis=2).sum() > 500
    faint = person.copy()
    faint[:, 2] = 1.1  # confidence 0.1: below the drawing threshold
    assert (KeypointEvaluator.vis_skeletons(image, [faint]) == image).all()


def test_hub_load_refusals():
    with pytest.raises(UsageError, match="pretrained=False"):
        mspn_cli.hub.load("mspn_4stage", pretrained=False)
    with pytest.raises(UsageError, match="unknown model"):
        mspn_cli.hub.load("resnet50")
    with pytest.raises(UsageError, match="megengine/models"):
        mspn_cli.hub.load("someone/else", "mspn_4stage")
    assert mspn_cli.KeypointEvaluator is KeypointEvaluator
