"""The guarded decoder: whatever a file claims to be, RGB out or a readable reason."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from models.imageio import ImageDecodeError, open_image


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    "name,data",
    [
        ("gif_named_anything", _bytes(Image.new("P", (8, 8), 3), "GIF")),
        ("rgba_png", _bytes(Image.new("RGBA", (8, 8), (255, 0, 0, 100)), "PNG")),
        ("grayscale_jpeg", _bytes(Image.new("L", (8, 8), 90), "JPEG")),
        ("cmyk_jpeg", _bytes(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG")),
        ("one_pixel_high", _bytes(Image.new("RGB", (50, 1), (1, 2, 3)), "JPEG")),
        ("palette_png_with_transparency", _bytes(Image.new("P", (8, 8), 0), "PNG", transparency=0)),
    ],
)
def test_odd_but_valid_images_come_out_rgb(name, data):
    img = open_image(data)
    assert img.mode == "RGB" and img.width >= 1 and img.height >= 1, name


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    r, g, b = open_image(buf.getvalue()).getpixel((4, 4))
    assert r > 200 and b < 50


def test_rgba_is_composited_on_white():
    data = _bytes(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "PNG")
    assert open_image(data).getpixel((1, 1)) == (255, 255, 255)


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty"),
        (b"hello, I am text", "not a recognised image"),
        (_bytes(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG")[:200], "truncated"),
    ],
)
def test_bad_bytes_raise_decode_error_with_reason(data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        open_image(data)


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def _png_header_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG that claim ``width`` x ``height`` pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(50_000, 50_000), (12_000, 10_000)])
def test_decompression_bomb_is_refused_before_decoding(size):
    with pytest.raises(ImageDecodeError, match="too large"):
        open_image(_png_header_claiming(*size))


def test_missing_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="not found"):
        open_image(tmp_path / "nope.jpg")


def _encoded(img: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    ("values", "fmt", "expected"),
    [
        # a 16-bit greyscale PNG (opens as I;16): 0..65535 onto 0..255, not clipped to white
        (np.array([[0, 257, 32896, 65535]], dtype=np.uint16), "PNG", [0, 1, 128, 255]),
        # a 32-bit integer TIFF holding 16-bit data
        (np.array([[0, 514, 40000, 65535]], dtype=np.int32), "TIFF", [0, 2, 156, 255]),
        # a 32-bit integer TIFF holding 8-bit data: kept as it is
        (np.array([[0, 7, 128, 255]], dtype=np.int32), "TIFF", [0, 7, 128, 255]),
        # a float TIFF of 0..1
        (np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32), "TIFF", [0, 64, 128, 255]),
    ],
)
def test_wide_greyscale_is_scaled_to_8_bits_not_clipped(values, fmt, expected):
    decoded = open_image(_encoded(Image.fromarray(values), fmt))
    assert decoded.mode == "RGB"
    assert np.asarray(decoded)[0, :, 0].tolist() == expected
    assert np.ptp(np.asarray(decoded), axis=2).max() == 0  # grey stays grey
