"""The one image gate: every image bsviz reads (a path, bytes, a PIL image or an array) comes in
through ``read_image``, which checks it in this order and refuses it with one line naming it:
missing or too large a file, not an image, a decompression bomb, too many pixels or too small
(all from the header, before decoding), then damaged or truncated data, or an unsupported mode.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_BYTES = 64 * 2**20   # larger files are refused before they are opened
MAX_PIXELS = 50_000_000  # larger images are refused from their header (an 8000x6000 photo is 48 Mpx)
MIN_SIDE = 16            # px; smaller images cannot show a face
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B")  # PIL modes of 16-bit gray images
MODES = {"1": "1-bit", "L": "grayscale", "LA": "grayscale + alpha", "I;16": "16-bit grayscale",
         "I": "16/32-bit grayscale", "F": "float grayscale", "P": "palette", "RGBA": "RGBA",
         "RGB": "RGB", "CMYK": "CMYK", "YCbCr": "YCbCr"}

ImageSource = str | Path | bytes | Image.Image | np.ndarray


class ImageError(ValueError):
    """An image that cannot be used: unreadable, damaged, too large or too small."""


def check_image_size(what: str, width: int, height: int, max_pixels: int = MAX_PIXELS,
                     min_side: int = MIN_SIDE) -> None:
    """Raise ImageError unless a width x height image (``what``: its name) could show a face and
    is small enough to decode safely."""
    if width * height > max_pixels:
        raise ImageError(f"{what} is too large: {width}x{height} px ({width * height / 1e6:.0f} "
                         f"Mpx); the limit is {max_pixels / 1e6:.0f} Mpx")
    if min(width, height) < min_side:
        raise ImageError(f"{what} is too small: {width}x{height} px; a face needs at least "
                         f"{min_side} px a side")


def read_image(source: ImageSource, name: str | None = None) -> tuple[np.ndarray, str]:
    """``source`` as (H, W, 3) uint8 RGB and a description such as 'a.png (640x480 RGBA)'.

    Files and bytes are checked from their header before decoding; EXIF rotation is applied;
    alpha is dropped; 16-bit and float images are scaled to 8 bits. Arrays are taken as RGB
    (not OpenCV's BGR): gray (H, W) / (H, W, 1), RGB or RGBA; uint8, 16-bit integers or floats
    in [0, 1]. ``name`` names the input in messages (default: the file name, or 'the image').
    Raises ImageError.
    """
    if isinstance(source, np.ndarray):
        name = name or "the image"
        if source.ndim >= 2:
            check_image_size(name, source.shape[1], source.shape[0])
        rgb = _array_rgb(source, name)
        return rgb, f"{name} ({rgb.shape[1]}x{rgb.shape[0]})"
    if isinstance(source, Image.Image):
        name = name or "the image"
        check_image_size(name, *source.size)
        return _pil_rgb(source, name), f"{name} ({source.width}x{source.height} " \
                                       f"{MODES.get(source.mode, source.mode)})"
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, data = name or "the image", io.BytesIO(bytes(source))
        n_bytes = len(source)
    else:
        path = Path(source)
        name = name or path.name
        if not path.is_file():
            raise ImageError(f"no such image file: {path}")
        data, n_bytes = path, path.stat().st_size
    if n_bytes > MAX_BYTES:
        raise ImageError(f"{name} is too large a file: {n_bytes / 2**20:.0f} MB; the limit is "
                         f"{MAX_BYTES / 2**20:.0f} MB")
    if n_bytes == 0:
        raise ImageError(f"{name} is empty (0 bytes)")
    try:
        im = Image.open(data)  # reads the header only
    except Image.DecompressionBombError:
        raise ImageError(f"{name} is too large to open safely (a decompression bomb?); the "
                         f"limit is {MAX_PIXELS / 1e6:.0f} Mpx") from None
    except (UnidentifiedImageError, SyntaxError, ValueError):
        raise ImageError(f"{name} is not an image file bsviz can read "
                         "(use PNG, JPEG, WebP or BMP)") from None
    except OSError as e:
        if e.errno is not None:  # the system's error (permissions, I/O), not the image's
            raise ImageError(f"cannot read {name}: {e.strerror}") from None
        raise ImageError(f"cannot decode {name}: the file is damaged or truncated") from None
    with im:
        check_image_size(name, *im.size)
        what = f"{name} ({im.width}x{im.height} {MODES.get(im.mode, im.mode)})"
        try:
            upright = ImageOps.exif_transpose(im)
            upright.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            raise ImageError(f"cannot decode {name}: the file is damaged or truncated") from None
    return _pil_rgb(upright, name), what


def read_rgb(source: ImageSource, name: str | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB: ``read_image`` without the description."""
    return read_image(source, name)[0]


def read_gray(source: ImageSource, size: int = 48) -> np.ndarray:
    """(size, size) float32 in [0, 1]: an image as grayscale (ITU-R 601 luma), resized if needed."""
    gray = Image.fromarray(read_rgb(source)).convert("L")
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.BICUBIC if gray.width < size else Image.LANCZOS)
    return np.asarray(gray, dtype=np.float32) / 255


def _pil_rgb(image: Image.Image, name: str) -> np.ndarray:
    if image.mode not in ("L", "RGB", "I", "F", *SIXTEEN_BIT):
        try:
            image = image.convert("RGB")  # palette, alpha, CMYK...; 16-bit modes are scaled below
        except (ValueError, OSError):
            raise ImageError(f"{name} has an unsupported image mode {image.mode}") from None
    return _array_rgb(np.asarray(image), name)


def _array_rgb(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        a = a[..., 0] if a.shape[2] == 1 else a[..., :3]
    if not (a.ndim == 2 or a.ndim == 3 and a.shape[2] == 3) or 0 in a.shape:
        raise ImageError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape "
                         f"{a.shape}")
    if a.dtype == bool or a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ImageError(f"{name} has NaN or inf pixels")
        a = np.clip(a * 255.0 + 0.5, 0, 255)  # [0, 1]
    elif a.dtype.kind in "iu" and a.dtype.itemsize > 1:
        a = np.clip(a / 257 + 0.5, 0, 255)  # 16-bit (PIL reads 16-bit PNGs as int32 'I')
    elif a.dtype != np.uint8:
        raise ImageError(f"{name} has an unsupported pixel type {a.dtype}")
    a = a.astype(np.uint8)
    return np.ascontiguousarray(np.stack([a] * 3, axis=-1) if a.ndim == 2 else a)
