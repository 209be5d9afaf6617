"""``/favicon.ico``: every process serves Atrium's mark (a real ICO, 16 and 32 px PNGs), never a 404."""

from __future__ import annotations

import struct
import zlib

import pytest

from services.kit.favicon import BACKGROUND, FOREGROUND, favicon_ico

pytestmark = pytest.mark.django_db


def _entries(ico: bytes) -> list[tuple[int, bytes]]:
    reserved, kind, count = struct.unpack_from("<HHH", ico)
    assert (reserved, kind) == (0, 1)  # an icon, not a cursor
    found = []
    for n in range(count):
        width, _height, _colours, _, _planes, _bits, size, offset = struct.unpack_from("<BBBBHHII", ico, 6 + 16 * n)
        found.append((width or 256, ico[offset : offset + size]))
    return found


def _rgba(png: bytes) -> tuple[int, list[bytes]]:
    """The PNG's side and its rows of RGBA pixels (filter bytes dropped; the favicon uses none)."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height, depth, colour = struct.unpack_from(">IIBB", png, 16)
    assert (width, depth, colour) == (height, 8, 6)
    data, at = b"", 8
    while at < len(png):
        (length,) = struct.unpack_from(">I", png, at)
        kind, body = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        assert struct.unpack_from(">I", png, at + 8 + length)[0] == zlib.crc32(kind + body)
        if kind == b"IDAT":
            data += body
        at += 12 + length
    raw = zlib.decompress(data)
    stride = 1 + 4 * width
    rows = [raw[i * stride : (i + 1) * stride] for i in range(height)]
    assert all(row[0] == 0 for row in rows)
    return width, [row[1:] for row in rows]


def test_the_favicon_is_served_as_an_icon_and_cached(client):
    response = client.get("/favicon.ico")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/vnd.microsoft.icon"
    assert "max-age=86400" in response["Cache-Control"]
    assert response.content == favicon_ico()


def test_it_holds_the_mark_at_16_and_32_pixels():
    entries = _entries(favicon_ico())

    assert [size for size, _ in entries] == [16, 32]
    for size, png in entries:
        side, rows = _rgba(png)
        assert side == size
        pixels = [tuple(row[i : i + 4]) for row in rows for i in range(0, len(row), 4)]
        # the tile's corners are transparent, its middle opaque; the arch is white on the dark blue
        assert pixels[0][3] == 0
        assert (*BACKGROUND, 255) in pixels
        assert (*FOREGROUND, 255) in pixels
        assert pixels[(size // 2) * size + size // 2] == (*BACKGROUND, 255)  # the doorway is open


def test_the_favicon_refuses_writes_like_every_read_only_route(client):
    response = client.post("/favicon.ico")

    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
