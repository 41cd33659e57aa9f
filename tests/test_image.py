"""The image gate: every kind of input comes in through one function, and every bad one is
refused with one line naming it."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from bsviz.vision import image as gate
from bsviz.vision.image import ImageError, check_image_size, read_image, read_rgb


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (the pixel data is never reached)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def encoded(array: np.ndarray, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt)
    return out.getvalue()


def test_every_kind_of_source_gives_the_same_pixels(tmp_path):
    gray = np.arange(48 * 64, dtype=np.uint8).reshape(48, 64)
    rgb = np.stack([gray] * 3, axis=-1)
    (tmp_path / "a.png").write_bytes(encoded(rgb))
    for source in (gray, gray[..., None], np.dstack([rgb, gray]), gray.astype(np.uint16) * 257,
                   gray / 255.0, Image.fromarray(gray), Image.fromarray(rgb).convert("RGBA"),
                   Image.fromarray(gray.astype(np.uint16) * 257), encoded(rgb),
                   tmp_path / "a.png", str(tmp_path / "a.png")):
        assert np.array_equal(read_rgb(source), rgb)
    assert read_image(tmp_path / "a.png")[1] == "a.png (64x48 RGB)"


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(png_header(20000, 20000)), "a decompression bomb"),
    (lambda p: p.write_bytes(png_header(9000, 6000)), r"too large: 9000x6000 px \(54 Mpx\)"),
    (lambda p: p.write_bytes(encoded(np.zeros((1, 1, 3), np.uint8))), "too small: 1x1 px"),
    (lambda p: p.write_bytes(encoded(np.zeros((64, 64, 3), np.uint8), "JPEG")[:300]),
     "damaged or truncated"),
    (lambda p: p.write_bytes(b"just some text\n"), "not an image file"),
    (lambda p: p.write_bytes(b""), r"empty \(0 bytes\)"),
])
def test_bad_files_are_refused_with_one_line_naming_them(tmp_path, make, message):
    path = tmp_path / "upload.png"
    make(path)
    with pytest.raises(ImageError, match=message) as error:
        read_rgb(path)
    assert "upload.png" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ImageError, match=message):  # bytes go through the same checks
        read_rgb(path.read_bytes(), name="upload.png")


def test_missing_and_oversized_files(tmp_path, monkeypatch):
    with pytest.raises(ImageError, match="no such image file: .*nowhere.png"):
        read_rgb(tmp_path / "nowhere.png")
    path = tmp_path / "big.png"
    path.write_bytes(encoded(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))
    monkeypatch.setattr(gate, "MAX_BYTES", 100)
    with pytest.raises(ImageError, match="big.png is too large a file"):
        read_rgb(path)


def test_arrays_are_checked_like_files():
    with pytest.raises(ImageError, match="the frame: expected an"):
        read_rgb(np.zeros((40, 40, 2), np.uint8), name="the frame")
    with pytest.raises(ImageError, match="too small: 8x8 px"):
        read_rgb(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ImageError, match="NaN or inf"):
        read_rgb(np.full((32, 32), np.nan))


def test_check_image_size_names_the_image_and_the_limit():
    check_image_size("a.png", 640, 480)
    check_image_size("a.png", 8000, 6000)  # a 48 Mpx phone photo is taken
    with pytest.raises(ImageError, match=r"a.png is too large: 9000x6000 px \(54 Mpx\)"):
        check_image_size("a.png", 9000, 6000)
    with pytest.raises(ImageError, match="a.png is too small: 8x300 px"):
        check_image_size("a.png", 8, 300)
    check_image_size("b.png", 8, 300, min_side=8)
