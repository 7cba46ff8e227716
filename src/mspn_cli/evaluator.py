"""`KeypointEvaluator`: the demo API of MegEngine Models' `official/vision/keypoints/inference.py`.

    evaluator = KeypointEvaluator(detector, model)        # or the seed's (detector, det_func, model, keypoint_func)
    person_boxes = evaluator.detect_persons(image)       # N x 5 [x1, y1, x2, y2, score]
    all_keypoints = evaluator.predict(image, person_boxes)   # N arrays of 17 x 3 (x, y, score)
    canvas = KeypointEvaluator.vis_skeletons(image, all_keypoints)

Everything runs through the CLI's own classes: `predict` is `PoseEstimator`, the code
behind `mspn keypoints --boxes`, so its keypoints equal the CLI's for the same image
and boxes; `vis_skeletons` is `visualize.draw_poses` (translucent ellipses along the
limbs, as the official demo draws).
"""

from __future__ import annotations

from typing import Any, List, Sequence

import numpy as np

from mspn_cli.detection.detector import PersonDetector
from mspn_cli.detection.postprocess import nms
from mspn_cli.detection.result import Detections
from mspn_cli.pose.estimator import PoseEstimator
from mspn_cli.skeleton import NUM_KEYPOINTS

__all__ = ["KeypointEvaluator", "PERSON_NMS_IOU", "VIS_KPT_THR"]

# inference.py runs one more NMS over the persons the detector kept (its own per-class NMS is at 0.5).
PERSON_NMS_IOU = 0.7
# Joints drawn: confidence above the CLI's default --kpt-thr (the 0-to-1 scale of visualize.joint_confidence).
VIS_KPT_THR = 0.3


def _network(value: Any, kind: type, role: str) -> Any:
    network = getattr(value, "network", value)  # a hub.HubModel or the class itself
    if not isinstance(network, kind):
        raise TypeError(f"KeypointEvaluator: the {role} must be a {kind.__name__} or hub.load(...) of one, "
                        f"got {type(value).__name__}")
    return network


class KeypointEvaluator:
    """Person detection, keypoints and drawing for one image at a time, as the official demo does.

    Takes `(detector, model)`, or the seed's `(detector, det_func, model, keypoint_func)`:
    the traced functions the official script passed are not needed here and are ignored.
    """

    def __init__(self, detector: Any, *rest: Any):
        if len(rest) == 1:
            model = rest[0]
        elif len(rest) == 3:
            _det_func, model, _keypoint_func = rest  # the official script's traced functions: not needed
        else:
            raise TypeError("KeypointEvaluator(detector, model) or KeypointEvaluator(detector, det_func, model, keypoint_func)")
        self.detector: PersonDetector = _network(detector, PersonDetector, "detector")
        self.model: PoseEstimator = _network(model, PoseEstimator, "keypoint model")

    def detect_persons(self, image: np.ndarray) -> np.ndarray:
        """The detector's persons as N x 5 float32 [x1, y1, x2, y2, score], after a person-only NMS at IoU 0.7.

        No score threshold beyond the detector's own (hub.load's detector keeps every
        person above its post-processing's 0.05, as the official one does).
        """
        persons = self.detector.detect(image).as_array()
        keep = nms(persons[:, :4], persons[:, 4], PERSON_NMS_IOU)
        return persons[keep]

    def predict(self, image: np.ndarray, bboxes: Any) -> List[np.ndarray]:
        """One 17 x 3 float32 array (x, y, score) per box of `bboxes` (N x 5 as detect_persons gives, or N x 4)."""
        boxes = np.asarray(bboxes, dtype=np.float32)
        if boxes.size == 0:
            return []
        if boxes.ndim != 2 or boxes.shape[1] not in (4, 5):
            raise ValueError(f"bboxes must be N x 5 [x1, y1, x2, y2, score] or N x 4, got shape {boxes.shape}")
        scores = boxes[:, 4] if boxes.shape[1] == 5 else np.ones(len(boxes), np.float32)
        for _, result in self.model.estimate_many([(None, image, Detections(boxes[:, :4], scores))]):
            return [person for person in result.keypoints]
        raise AssertionError("estimate_many yields one result per image")

    @staticmethod
    def vis_skeletons(img: np.ndarray, all_keypoints: Sequence[np.ndarray]) -> np.ndarray:
        """A copy of `img` with every skeleton drawn: translucent ellipses along the limbs, dots on the joints."""
        from mspn_cli.visualize import draw_poses

        keypoints = np.asarray(list(all_keypoints), dtype=np.float32).reshape(-1, NUM_KEYPOINTS, 3)
        return draw_poses(img, keypoints, kpt_thr=VIS_KPT_THR, draw_boxes=False)
