"""Fuzzing the input decoders: any bytes and any JSON give a decoded value or an InputError."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import COCO_SAMPLE, huge_png_bytes

GOOD_IMAGE = COCO_SAMPLE / "000000000785.jpg"


def _json_values():
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False) | st.text(max_size=8)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                        max_leaves=20)


def _detection_like_entries():
    """Lists of dicts whose keys are the ones parse_detections reads, with values of any type."""
    from hypothesis import strategies as st

    value = _json_values()
    # JSON integers have no size limit: 1 followed by 400 zeros is valid and does not fit a float.
    number = st.integers(-10**20, 10**20) | st.integers(10**308, 10**400) | st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False)
    bbox = st.lists(number, min_size=0, max_size=6) | value
    entry = st.fixed_dictionaries(
        {},
        optional={"image_id": number | value, "file_name": st.text(max_size=12) | value, "bbox": bbox,
                  "score": number | value, "category_id": number | value},
    )
    return st.lists(entry, max_size=5)


def test_fuzz_decode_image_bytes_raises_only_input_error():
    import cv2
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from mspn_cli.errors import InputError
    from mspn_cli.io.sources import decode_image_bytes

    # Mutations of real headers reach deeper into the decoders than uniform random bytes.
    seeds = [GOOD_IMAGE.read_bytes()[:4096], huge_png_bytes(), cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes(),
             cv2.imencode(".bmp", np.zeros((4, 4, 3), np.uint8))[1].tobytes()]

    @st.composite
    def mutated(draw):
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(0, 8))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] = draw(st.integers(0, 255))
        return bytes(data[: draw(st.integers(0, len(data)))])

    @settings(max_examples=400, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=2048) | mutated())
    def check(data):
        try:
            image = decode_image_bytes(data, "fuzz.jpg")
        except InputError:
            return
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3

    check()


def test_fuzz_parse_detections_raises_only_input_error():
    from hypothesis import HealthCheck, example, given, settings

    from mspn_cli.io.detections import parse_detections
    from mspn_cli.errors import InputError

    @settings(max_examples=1500, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(_json_values() | _detection_like_entries())
    @example([{"image_id": 1, "bbox": [0, 0, 10**400, 5], "score": 1.0}])  # what the fuzzer found first
    def check(data):
        for require_coco_fields in (True, False):  # eval-coco --dets, keypoints --boxes
            try:
                parse_detections(data, "fuzz.json", require_coco_fields=require_coco_fields)
            except InputError:
                pass

    check()
