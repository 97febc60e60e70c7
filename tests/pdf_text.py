"""What a PDF shows, read without a PDF library: its page count, and the text drawn on its
pages (every Tj and TJ string of its compressed content streams; matplotlib keeps text as
text). Enough for the reports' tests. (No tests in this module.)"""

from __future__ import annotations

import re
import zlib
from pathlib import Path


def pdf_text(path: Path) -> str:
    """The text drawn on the PDF's pages: the strings of every Tj and TJ, decompressed."""
    raw = path.read_bytes()
    out = []
    # Up to "endstream" with the end-of-line before it: compressed data may itself end in a
    # byte that looks like one (a stripped \r left a stream truncated); zlib stops at its end.
    for stream in re.findall(rb"stream\r?\n(.*?)endstream", raw, re.S):
        try:
            content = zlib.decompressobj().decompress(stream)
        except zlib.error:
            continue
        for array, single in re.findall(rb"\[(.*?)\]\s*TJ|\((.*?)\)\s*Tj", content, re.S):
            parts = re.findall(rb"\(((?:\\.|[^\\)])*)\)", array) if array else [single]
            out.append(b"".join(re.sub(rb"\\(.)", rb"\1", p) for p in parts).decode("latin-1"))
    return "\n".join(out)


def pdf_pages(path: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page\b", path.read_bytes()))
