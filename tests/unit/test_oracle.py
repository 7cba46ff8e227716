"""Oracle: ground-truth heatmaps through the real keypoints pipeline give AP close to 1.

The network is replaced by a stand-in that renders Gaussian heatmaps at the
ground-truth keypoints, so the score measures only the geometry: box extension,
the affine crop, the flip test, the decoder and the mapping back to the image.
"""

from __future__ import annotations

from tests.conftest import COCO_SAMPLE
from tests.oracle import OracleBackend

ANN = COCO_SAMPLE / "person_keypoints_sample.json"
DETS = COCO_SAMPLE / "person_dets_sample.json"


def test_oracle_heatmaps_through_keypoints_pipeline_reach_ap_095():
    import json

    from mspn_cli.evaluation.cocoeval import evaluate_keypoints
    from mspn_cli.io.detections import load_detections
    from mspn_cli.io.sources import read_image
    from mspn_cli.pipeline import PipelineItem, PoseEstimator, PosePipeline

    oracle = OracleBackend.from_coco(ANN, DETS, COCO_SAMPLE)
    pipeline = PosePipeline(PoseEstimator(backend=oracle, batch_size=7))  # odd size: chunks cross image borders
    dets = load_detections(DETS, require_coco_fields=True)
    images = {img["id"]: img["file_name"] for img in json.loads(ANN.read_text())["images"]}

    def items():
        for image_id in sorted(images):
            found = dets.detections_for(image_id)
            if found is not None:
                yield PipelineItem(image_id, read_image(COCO_SAMPLE / images[image_id]), found)

    records = []
    for image_id, result in pipeline.run(items()):
        records.extend(result.to_records(image_id, images[image_id]))
    assert len(records) == len(json.loads(DETS.read_text()))
    report = evaluate_keypoints(ANN, records)
    assert report.stats["AP"] >= 0.95, report.stats
    assert report.stats["AR"] >= 0.95, report.stats
