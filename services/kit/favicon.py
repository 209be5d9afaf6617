"""``/favicon.ico`` for every process: Atrium's mark — a white arch (an atrium's doorway) on the admin's dark blue —
drawn here in code at 16 and 32 pixels, anti-aliased, as PNG images in one ICO file (no binary asset to keep, and
no 404 in every browser's log)."""

from __future__ import annotations

import functools
import math
import struct
import zlib

from django.http import HttpRequest, HttpResponse

from services.kit.health import require_get

BACKGROUND = (0x26, 0x4B, 0x5D)  # the admin header's dark blue
FOREGROUND = (0xFF, 0xFF, 0xFF)
SIZES = (16, 32)
SAMPLES = 4  # per pixel side: 16 samples a pixel


def _inside_tile(x: float, y: float) -> bool:
    """A square with rounded corners filling the unit square."""
    r = 0.2
    cx, cy = min(max(x, r), 1 - r), min(max(y, r), 1 - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def _inside_arch(x: float, y: float) -> bool:
    """An arch: two posts and a half ring over them, open at the bottom (a doorway)."""
    left, right, top, bottom, stroke = 0.24, 0.76, 0.2, 0.82, 0.15
    cx, radius = (left + right) / 2, (right - left) / 2
    spring = top + radius  # where the posts meet the ring
    if y >= spring:
        return y <= bottom and (left <= x <= left + stroke or right - stroke <= x <= right)
    distance = math.hypot(x - cx, y - spring)
    return radius - stroke <= distance <= radius and y >= top


def _pixels(size: int) -> bytes:
    """RGBA rows, each preceded by PNG's filter byte (0: none)."""
    rows = bytearray()
    for py in range(size):
        rows.append(0)
        for px in range(size):
            tile = arch = 0
            for sy in range(SAMPLES):
                for sx in range(SAMPLES):
                    x, y = (px + (sx + 0.5) / SAMPLES) / size, (py + (sy + 0.5) / SAMPLES) / size
                    if _inside_tile(x, y):
                        tile += 1
                        arch += _inside_arch(x, y)
            alpha = round(255 * tile / SAMPLES**2)
            share = arch / tile if tile else 0.0
            rows.extend(round(b + (f - b) * share) for b, f in zip(BACKGROUND, FOREGROUND, strict=True))
            rows.append(alpha)
    return bytes(rows)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(size: int) -> bytes:
    """The mark as a ``size`` x ``size`` RGBA PNG."""
    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8 bits per channel, RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(_pixels(size), 9))
        + _chunk(b"IEND", b"")
    )


@functools.cache
def favicon_ico() -> bytes:
    """An ICO holding the mark at every size of :data:`SIZES` (PNG entries, which every current browser reads)."""
    images = [png(size) for size in SIZES]
    offset = 6 + 16 * len(images)
    directory = b""
    for size, image in zip(SIZES, images, strict=True):
        directory += struct.pack("<BBBBHHII", size % 256, size % 256, 0, 0, 1, 32, len(image), offset)
        offset += len(image)
    return struct.pack("<HHH", 0, 1, len(images)) + directory + b"".join(images)


@require_get
def favicon_view(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(favicon_ico(), content_type="image/vnd.microsoft.icon")
    response["Cache-Control"] = "public, max-age=86400"
    return response
