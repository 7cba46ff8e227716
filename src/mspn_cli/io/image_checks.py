"""What OpenCV does not say about an encoded image: truncation, extra pages; and its chatter.

OpenCV decodes a JPEG cut to a third of its bytes without an error or a warning (the
missing rows come out grey), so keypoints would be computed on half a picture. The
checks here walk the file's own structure instead: a JPEG's segments up to its
end-of-image marker, a PNG's chunks up to IEND, the sizes a WebP or BMP header
declares. Data after the end (a phone's appended motion-photo video) is ignored.

The decoders also print to file descriptor 2 themselves ("libpng error: ...", "libpng
warning: iCCP: ...", OpenCV's "[ERROR:0@...]" lines). `quiet_imdecode` runs
`cv2.imdecode` with fd 2 pointed at a temporary file, under a lock (decoding runs on
the prefetch thread), and passes on anything captured that is not decoder chatter.
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
import threading
from typing import Optional, Tuple

import cv2
import numpy as np

__all__ = ["truncation_of", "tiff_page_count", "quiet_imdecode", "said_premature_end", "CHATTER_PREFIXES"]

# Lines the decoders print on their own; ours is the one line per bad file.
CHATTER_PREFIXES = ("libpng ", "[ WARN:", "[ERROR:", "[ INFO:", "Corrupt JPEG data", "Premature end of JPEG",
                    "Invalid SOS", "Warning: ", "JPEG datastream", "TIFFReadDirectory", "TIFFFetchNormalTag", "imdecode_")
_PREMATURE_END = ("Premature end of JPEG", "premature end of data segment")
_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: no length field
_stderr_lock = threading.Lock()


def _jpeg_truncation(data: bytes) -> Optional[str]:
    """Walk the segments from SOI; None when the end-of-image marker is reached."""
    size = len(data)
    pos = 2
    while True:
        # Markers may be padded with any number of 0xFF bytes.
        while pos < size and data[pos] == 0xFF:
            pos += 1
        if pos >= size:
            return "truncated JPEG: the file ends before its end-of-image marker"
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            return None
        if marker in _STANDALONE_MARKERS or marker == 0x00:
            continue
        if pos + 2 > size:
            return "truncated JPEG: the file ends inside a segment header"
        length = struct.unpack_from(">H", data, pos)[0]
        if length < 2:
            return None  # malformed rather than truncated: the decoder decides
        pos += length
        if pos > size:
            return "truncated JPEG: the file ends inside a segment"
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= size:
                    return "truncated JPEG: the file ends inside the image data (no end-of-image marker)"
                following = data[pos + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                    pos += 1 if following == 0xFF else 2
                    continue
                break


def _png_truncation(data: bytes) -> Optional[str]:
    """Walk the chunks after the signature; None when IEND is complete."""
    size = len(data)
    pos = 8
    while True:
        if pos + 8 > size:
            return "truncated PNG: the file ends before its IEND chunk"
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > size:
            return f"truncated PNG: the file ends inside its {kind.decode('latin-1', 'replace')} chunk"
        if kind == b"IEND":
            return None
        pos = end


def truncation_of(data: bytes) -> Optional[str]:
    """Why `data` is a truncated image (one phrase), or None when it is complete or not checked."""
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_truncation(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png_truncation(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 12:
        declared = struct.unpack_from("<I", data, 4)[0] + 8
        return f"truncated WebP: {len(data)} of {declared} bytes" if len(data) < declared else None
    if data[:2] == b"BM" and len(data) >= 6:
        declared = struct.unpack_from("<I", data, 2)[0]
        return f"truncated BMP: {len(data)} of {declared} bytes" if declared and len(data) < declared else None
    return None


def tiff_page_count(data: bytes, limit: int = 1000) -> int:
    """Number of pages (IFDs) of a TIFF, 0 when `data` is not a TIFF; stops counting at `limit`."""
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        order = "<" if data[:2] == b"II" else ">"
        offset_format, count_format, entry_size, offset_size, first = "I", "H", 12, 4, 4
    elif data[:4] in (b"II+\x00", b"MM\x00+"):  # BigTIFF
        order = "<" if data[:2] == b"II" else ">"
        offset_format, count_format, entry_size, offset_size, first = "Q", "Q", 20, 8, 8
    else:
        return 0
    count_size = struct.calcsize(count_format)
    try:
        offset = struct.unpack_from(order + offset_format, data, first)[0]
        pages, seen = 0, set()
        while offset and offset not in seen and pages < limit:
            seen.add(offset)
            entries = struct.unpack_from(order + count_format, data, offset)[0]
            pages += 1
            offset = struct.unpack_from(order + offset_format, data, offset + count_size + entries * entry_size)[0]
        return pages
    except struct.error:  # an IFD pointing past the end: count what was read
        return max(pages, 1)


def quiet_imdecode(buffer: np.ndarray, flags: int) -> Tuple[Optional[np.ndarray], str]:
    """`cv2.imdecode` with the decoders' own stderr lines captured: (image or None, captured text)."""
    with _stderr_lock:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no real fd 2: nothing to keep clean
            return _imdecode(buffer, flags), ""
        with tempfile.TemporaryFile() as capture:
            try:
                os.dup2(capture.fileno(), 2)
                image = _imdecode(buffer, flags)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
    _pass_on_foreign_lines(text)
    return image, text


def said_premature_end(captured: str) -> bool:
    return any(phrase in captured for phrase in _PREMATURE_END)


def _imdecode(buffer: np.ndarray, flags: int) -> Optional[np.ndarray]:
    try:
        return cv2.imdecode(buffer, flags)
    except cv2.error:
        return None


def _pass_on_foreign_lines(text: str) -> None:
    """Another thread may have written to fd 2 while it pointed at the capture: give its lines back."""
    foreign = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith(CHATTER_PREFIXES)]
    if foreign:
        try:
            sys.stderr.write("\n".join(foreign) + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
