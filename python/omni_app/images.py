"""Decode user images for the vision stage: PNG, JPEG or WebP bytes -> C-contiguous uint8 (h, w, 3) RGB.

The limits are checked before any pixel is decoded: the byte count first, then the pixel count of the size in
the file's header (``Image.open`` reads only the header). The EXIF orientation is applied, unlike the PyTorch
reference (which hands ``image.convert("RGB")`` to its processor as stored): phone photos store their pixels
sideways and say so in EXIF, and the model should see them the way the user does. Every other mode (RGBA, LA,
P, L, 1, CMYK, 16-bit grey) becomes RGB; alpha is dropped as ``convert("RGB")`` drops it in the reference.

Every rejection is an :class:`ImageDecodeError` whose message starts with the request field's name; the
subclasses :class:`ImageTooLargeError` (413) and :class:`UnsupportedImageFormatError` (415) are the ones the
server answers with another status than 400.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ACCEPTED_FORMATS: dict[str, str] = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}  # Pillow name -> label
DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
# Pillow opens 16-bit greyscale PNGs in these modes; convert("RGB") would clip them at 255 instead of scaling.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
UINT16_MAX = 65535


class ImageDecodeError(ValueError):
    """The image cannot be used; the message starts with the request field's name."""

    def __init__(self, message: str, field: str = "image") -> None:
        super().__init__(message)
        self.field = field


class ImageTooLargeError(ImageDecodeError):
    """The image has more bytes or pixels than the configured limits."""


class UnsupportedImageFormatError(ImageDecodeError):
    """The data is an image, but not in one of the accepted formats."""


def accepted_formats_text(conjunction: str) -> str:
    """ "PNG, JPEG or WebP" / "PNG, JPEG and WebP"."""
    labels = list(ACCEPTED_FORMATS.values())
    return f"{', '.join(labels[:-1])} {conjunction} {labels[-1]}"


def decode_image(data: bytes, max_bytes: int, max_pixels: int, field: str = "image") -> np.ndarray:
    """``data`` (an encoded PNG, JPEG or WebP file) as a C-contiguous uint8 array (height, width, 3), RGB."""
    if not data:
        raise ImageDecodeError(f"{field} is empty", field)
    if len(data) > max_bytes:
        raise ImageTooLargeError(
            f"{field} is {len(data)} bytes; the limit is {max_bytes} bytes (--max-image-bytes)", field
        )
    with _open_image(data, field) as image:
        _check_format(image, field)
        _check_pixels(image.size, max_pixels, field)
        return _decode_pixels(image, field)


def _open_image(data: bytes, field: str) -> Image.Image:
    """Read the header only; no pixel is decoded here."""
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # Pillow's own ceiling, far above the default limit
        raise ImageTooLargeError(f"{field} is too large: {exc}", field) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"{field}: cannot decode: not a {accepted_formats_text('or')} file "
            f"(the data starts with {data[:8].hex(' ')})",
            field,
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{field}: cannot decode the image header ({exc})", field) from exc


def _check_format(image: Image.Image, field: str) -> None:
    if image.format not in ACCEPTED_FORMATS:
        raise UnsupportedImageFormatError(
            f"{field} is a {image.format} image; the accepted formats are {accepted_formats_text('and')}",
            field,
        )


def _check_pixels(size: tuple[int, int], max_pixels: int, field: str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageDecodeError(f"{field} has no pixels ({width}x{height})", field)
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{field} is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels "
            "(--max-image-pixels)",
            field,
        )


def _decode_pixels(image: Image.Image, field: str) -> np.ndarray:
    label = ACCEPTED_FORMATS[str(image.format)]
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # Pillow's ways of saying "broken data"
        raise ImageDecodeError(f"{field}: cannot decode the {label} data ({exc})", field) from exc
    return np.ascontiguousarray(_to_rgb(image), dtype=np.uint8)


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in SIXTEEN_BIT_MODES:
        wide = np.clip(np.asarray(image, dtype=np.int64), 0, UINT16_MAX)
        grey = ((wide * 255 + UINT16_MAX // 2) // UINT16_MAX).astype(np.uint8)  # rounded 0..65535 -> 0..255
        return np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
