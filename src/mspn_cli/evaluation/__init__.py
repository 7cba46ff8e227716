"""COCO keypoint evaluation as the official MSPN test does it (reference §2, §4.4).

annotations (ground truth) -> selection (the boxes the official test keeps) -> run
(images through `PosePipeline`, with a per-image checkpoint) -> cocoeval (COCOeval's 10
stats) -> summary. shards splits a run and merges it back; job and workers run shards
in local processes. No CLI code and no drawing here.
"""
