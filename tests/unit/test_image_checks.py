"""Truncated images are bad inputs; the decoders' own stderr lines stay off the terminal (issue 15, items 2 and 13).

OpenCV decodes a JPEG cut to a third or two thirds of its bytes without an error (the
missing rows come out grey). Every cut of every encoding below must be refused, every
complete file (with trailing bytes after its end, as some phones append) accepted.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest

from mspn_cli.errors import InputError
from mspn_cli.io.image_checks import tiff_page_count, truncation_of
from mspn_cli.io.sources import decode_image_bytes
from tests.conftest import COCO_SAMPLE

PHOTO = cv2.imread(str(COCO_SAMPLE / "000000000785.jpg"), cv2.IMREAD_COLOR)
ENCODINGS = {
    "baseline-jpeg": (".jpg", []),
    "progressive-jpeg": (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    "jpeg-with-restart-markers": (".jpg", [cv2.IMWRITE_JPEG_RST_INTERVAL, 2]),
    "png": (".png", []),
    "webp": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 90]),
    "bmp": (".bmp", []),
}


def _encoded(kind: str) -> bytes:
    extension, params = ENCODINGS[kind]
    ok, data = cv2.imencode(extension, PHOTO, params)
    assert ok
    return data.tobytes()


@pytest.mark.parametrize("kind", ENCODINGS)
@pytest.mark.parametrize("fraction", [1 / 3, 2 / 3, 0.999])
def test_cut_files_are_refused(kind, fraction):
    data = _encoded(kind)
    cut = data[: int(len(data) * fraction)]
    assert truncation_of(cut) is not None
    with pytest.raises(InputError, match="truncated") as caught:
        decode_image_bytes(cut, "photo")
    assert "--allow-truncated" in str(caught.value)


@pytest.mark.parametrize("kind", ["baseline-jpeg", "progressive-jpeg", "jpeg-with-restart-markers"])
def test_a_jpeg_cut_inside_its_scan_says_so(kind):
    """The cut lands in the entropy-coded data after a start-of-scan: the phrase names it."""
    data = _encoded(kind)
    assert truncation_of(data[: len(data) // 2]) == \
        "truncated JPEG: the file ends inside the image data (no end-of-image marker)"


@pytest.mark.parametrize("kind", ENCODINGS)
def test_complete_files_pass_even_with_trailing_bytes(kind):
    data = _encoded(kind)
    assert truncation_of(data) is None
    assert decode_image_bytes(data, "photo").shape == PHOTO.shape
    assert decode_image_bytes(data + b"\x00" * 64 + b"appended motion photo" * 50, "photo").shape == PHOTO.shape


def test_the_vendored_photos_are_complete():
    for path in sorted(COCO_SAMPLE.glob("*.jpg")):
        assert truncation_of(path.read_bytes()) is None, path


def test_allow_truncated_decodes_a_cut_jpeg_and_says_so():
    data = _encoded("baseline-jpeg")
    notes = []
    image = decode_image_bytes(data[: len(data) // 3], "photo.jpg", allow_truncated=True, notes=notes)
    assert image.shape == PHOTO.shape
    assert len(notes) == 1 and "truncated" in notes[0] and "photo.jpg" in notes[0]


def test_a_cut_png_cannot_be_decoded_even_when_allowed():
    data = _encoded("png")
    with pytest.raises(InputError, match="truncated PNG.*cannot be decoded"):
        decode_image_bytes(data[: len(data) // 2], "photo.png", allow_truncated=True)


def test_multi_page_tiff_says_only_page_one_is_used(tmp_path):
    pages = [np.full((20, 30, 3), value, np.uint8) for value in (10, 120, 240)]
    assert cv2.imwritemulti(str(tmp_path / "pages.tiff"), pages)
    assert cv2.imwrite(str(tmp_path / "single.tiff"), pages[0])
    multi, single = (tmp_path / "pages.tiff").read_bytes(), (tmp_path / "single.tiff").read_bytes()
    assert (tiff_page_count(multi), tiff_page_count(single), tiff_page_count(b"not a tiff")) == (3, 1, 0)
    notes = []
    image = decode_image_bytes(multi, "pages.tiff", notes=notes)
    assert int(image.mean()) == 10  # page 1
    assert notes == ["pages.tiff: a multi-page TIFF (3 pages); only page 1 is used"]
    notes = []
    decode_image_bytes(single, "single.tiff", notes=notes)
    assert notes == []


def _bigtiff(pages: int, order: str = "<") -> bytes:
    """A hand-made BigTIFF: 16-byte header, then `pages` IFDs of one 20-byte entry each,
    chained by their 8-byte next-IFD offsets (the last one 0)."""
    magic = b"II+\x00" if order == "<" else b"MM\x00+"
    data = magic + struct.pack(order + "HHQ", 8, 0, 16)
    for page in range(pages):
        following = 16 + 36 * (page + 1) if page < pages - 1 else 0
        data += struct.pack(order + "Q", 1) + struct.pack(order + "HHQQ", 256, 3, 1, 64) + struct.pack(order + "Q", following)
    return data


@pytest.mark.parametrize("order", ["<", ">"])
def test_bigtiff_pages_are_counted(order):
    assert [tiff_page_count(_bigtiff(pages, order)) for pages in (1, 2, 3)] == [1, 2, 3]


def test_a_stuffed_byte_right_before_the_end_of_image_marker():
    """In a scan FF 00 is one data byte: the walk steps over the pair and still sees the FF D9
    right after it; RST markers likewise."""
    for scan in (b"\x12\xff\x00", b"\x12\xff\xd3"):
        jpeg = b"\xff\xd8" + b"\xff\xda\x00\x02" + scan + b"\xff\xd9"
        assert truncation_of(jpeg) is None
        assert truncation_of(jpeg[:-1]) == "truncated JPEG: the file ends inside the image data (no end-of-image marker)"


def test_lines_others_wrote_while_stderr_was_captured_are_given_back(capsys):
    """Only the decoders' own chatter is dropped from the captured text."""
    from mspn_cli.io.image_checks import _pass_on_foreign_lines

    _pass_on_foreign_lines("libpng warning: iCCP: known incorrect sRGB profile\nprogress 3/10\n\n"
                           "[ WARN:0@1.2] global loadsave.cpp\nanother thread's line")
    assert capsys.readouterr().err == "progress 3/10\nanother thread's line\n"
    _pass_on_foreign_lines("Corrupt JPEG data: 12 extraneous bytes\n")
    assert capsys.readouterr().err == ""


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_with_bad_icc_profile() -> bytes:
    """A valid PNG whose iCCP chunk holds a profile libpng complains about on stderr."""
    png = cv2.imencode(".png", PHOTO[:40, :40])[1].tobytes()
    iccp = _png_chunk(b"iCCP", b"bogus\x00\x00" + zlib.compress(b"\x00" * 200))
    return png[:33] + iccp + png[33:]  # after the signature and IHDR


DECODE_IN_CHILD = """
import sys
from mspn_cli.errors import InputError
from mspn_cli.io.sources import decode_image_bytes
data = open(sys.argv[1], "rb").read()
try:
    decode_image_bytes(data, "x", allow_truncated=True)  # so that OpenCV decodes the cut files too
    print("decoded")
except InputError as exc:
    print("refused:", exc)
print("still writing to stderr", file=sys.stderr)
"""


@pytest.mark.parametrize("case", ["icc-warning", "cut-png", "cut-bmp"])
def test_decoder_chatter_stays_off_stderr(tmp_path, case):
    """libpng's 'iCCP: ...' warnings and OpenCV's [ERROR] lines are written to fd 2 by C code:
    checked in a child process, whose fd 2 is a pipe the test reads."""
    data = {"icc-warning": png_with_bad_icc_profile(), "cut-png": _encoded("png")[:5000],
            "cut-bmp": _encoded("bmp")[:5000]}[case]
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    path = tmp_path / "image.bin"
    path.write_bytes(data)
    proc = subprocess.run([sys.executable, "-c", DECODE_IN_CHILD, str(path)], capture_output=True, text=True,
                          env=dict(os.environ), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("decoded" if case == "icc-warning" else "refused"), proc.stdout
    assert (raw is not None) == (case == "icc-warning")
    assert proc.stderr == "still writing to stderr\n", proc.stderr  # fd 2 is restored afterwards


def test_opencv_itself_prints_the_chatter_being_hidden(tmp_path):
    """Without the capture the warning does reach stderr: the test above can fail."""
    path = tmp_path / "image.png"
    path.write_bytes(png_with_bad_icc_profile())
    code = f"import cv2, numpy as np; cv2.imdecode(np.fromfile({str(path)!r}, np.uint8), cv2.IMREAD_COLOR)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "libpng warning" in proc.stderr
