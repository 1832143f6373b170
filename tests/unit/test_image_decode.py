"""omni_app.images.decode_image: PNG/JPEG/WebP bytes -> uint8 (h, w, 3) RGB with the EXIF orientation applied,
every mode converted to RGB, the byte and pixel limits checked before any pixel is decoded, and a clear error
(with the status class the server maps) for every kind of unusable input. No engine involved."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from omni_app.images import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageDecodeError,
    ImageTooLargeError,
    UnsupportedImageFormatError,
    decode_image,
)

MAX_BYTES = 1 << 20
MAX_PIXELS = 1_000_000
EXIF_ORIENTATION = 0x0112


def decode(data: bytes, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    return decode_image(data, max_bytes, max_pixels)


def pattern(height: int = 6, width: int = 10) -> np.ndarray:
    """An RGB image in which every pixel differs from every other (any flip or rotation shows)."""
    values = np.arange(height * width * 3, dtype=np.int64).reshape(height, width, 3)
    return (values * 7 % 256).astype(np.uint8)


def encode(image: Image.Image, file_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, file_format, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says width x height but whose pixel data is garbage (decoding it fails)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"not zlib data")
        + png_chunk(b"IEND", b"")
    )


def assert_rgb_array(pixels: np.ndarray, height: int, width: int) -> None:
    assert pixels.dtype == np.uint8 and pixels.shape == (height, width, 3)
    assert pixels.flags.c_contiguous


# ----- formats ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("file_format", "options"),
    [("PNG", {}), ("WEBP", {"lossless": True}), ("JPEG", {"quality": 100, "subsampling": 0})],
)
def test_png_webp_and_jpeg_decode_to_the_pixels(file_format, options):
    rgb = pattern(24, 40)
    pixels = decode(encode(Image.fromarray(rgb), file_format, **options))
    assert_rgb_array(pixels, 24, 40)
    if file_format == "JPEG":  # lossy: close, not equal
        assert np.abs(pixels.astype(int) - rgb.astype(int)).mean() < 3.0
    else:
        np.testing.assert_array_equal(pixels, rgb)


def test_defaults_are_20_mib_and_50_megapixels():
    assert (DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS) == (20 * 1024 * 1024, 50_000_000)


# ----- modes -----------------------------------------------------------------------------------------------
def test_rgba_and_la_drop_alpha_keeping_the_colour():
    rgb = pattern()
    alpha = np.linspace(0, 255, rgb.shape[0] * rgb.shape[1]).astype(np.uint8).reshape(rgb.shape[:2])
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    np.testing.assert_array_equal(decode(encode(rgba, "PNG")), rgb)
    np.testing.assert_array_equal(decode(encode(rgba, "WEBP", lossless=True, exact=True)), rgb)
    grey = rgb[:, :, 0]
    la = Image.fromarray(np.dstack([grey, alpha]), "LA")
    np.testing.assert_array_equal(decode(encode(la, "PNG")), np.repeat(grey[:, :, None], 3, axis=2))


def test_grey_and_bilevel_images_repeat_the_grey_level_in_three_channels():
    grey = pattern()[:, :, 1]
    np.testing.assert_array_equal(decode(encode(Image.fromarray(grey, "L"), "PNG")), np.dstack([grey] * 3))
    bits = grey > 127
    expected = np.where(bits, 255, 0).astype(np.uint8)
    decoded = decode(encode(Image.fromarray(bits).convert("1"), "PNG"))
    np.testing.assert_array_equal(decoded, np.dstack([expected] * 3))


def test_palette_image_maps_through_its_palette_also_with_transparency():
    indices = (np.arange(60).reshape(6, 10) % 3).astype(np.uint8)
    palette = [255, 0, 0, 0, 128, 255, 10, 20, 30]
    image = Image.fromarray(indices, "P")
    image.putpalette(palette)
    expected = np.array(palette, dtype=np.uint8).reshape(3, 3)[indices]
    np.testing.assert_array_equal(decode(encode(image, "PNG")), expected)
    np.testing.assert_array_equal(decode(encode(image, "PNG", transparency=1)), expected)


def test_sixteen_bit_grey_is_scaled_to_eight_bits_not_clipped():
    levels = np.array([[0, 257, 32896, 65535], [128, 129, 65278, 65408]], dtype=np.uint16)
    data = encode(Image.fromarray(levels), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # the 16-bit mode, not "L"
    expected = np.array([[0, 1, 128, 255], [0, 1, 254, 255]], dtype=np.uint8)  # round(v * 255 / 65535)
    np.testing.assert_array_equal(decode(data), np.dstack([expected] * 3))


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    pixels = decode(encode(cmyk, "JPEG", quality=100))
    assert_rgb_array(pixels, 16, 16)
    np.testing.assert_allclose(pixels.reshape(-1, 3).mean(axis=0), [255, 0, 0], atol=2)


# ----- EXIF orientation ------------------------------------------------------------------------------------
UPRIGHT = {  # orientation tag -> what the viewer shows, computed from the stored pixels
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),  # stored rotated 90 degrees counter-clockwise: turn clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, k=1),
}


def with_orientation(rgb: np.ndarray, orientation: int, file_format: str, **options: object) -> bytes:
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[EXIF_ORIENTATION] = orientation
    return encode(image, file_format, exif=exif, **options)


@pytest.mark.parametrize("orientation", list(UPRIGHT))
def test_exif_orientation_is_applied(orientation):
    rgb = pattern(6, 10)
    pixels = decode(with_orientation(rgb, orientation, "PNG"))
    np.testing.assert_array_equal(pixels, UPRIGHT[orientation](rgb))
    assert pixels.flags.c_contiguous


def test_phone_photo_jpeg_stored_sideways_comes_out_upright():
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16] = (250, 0, 0)  # the left third of the stored pixels is red
    pixels = decode(with_orientation(rgb, 6, "JPEG", quality=95))
    assert_rgb_array(pixels, 48, 32)  # portrait now
    assert pixels[:16, :, 0].mean() > 240 and pixels[20:, :, 0].mean() < 10  # red on top


# ----- limits (checked on the header, before decoding) -----------------------------------------------------
def test_byte_limit_is_inclusive_and_checked_first():
    data = encode(Image.fromarray(pattern()), "PNG")
    assert decode(data, max_bytes=len(data)).shape == (6, 10, 3)
    with pytest.raises(ImageTooLargeError) as error:
        decode(data, max_bytes=len(data) - 1)
    assert str(error.value) == (
        f"image is {len(data)} bytes; the limit is {len(data) - 1} bytes (--max-image-bytes)"
    )
    with pytest.raises(ImageTooLargeError):
        decode(b"not an image at all", max_bytes=5)  # the size is refused before the data is looked at


def test_pixel_limit_is_inclusive():
    data = encode(Image.fromarray(pattern(6, 10)), "PNG")
    assert decode(data, max_pixels=60).shape == (6, 10, 3)
    with pytest.raises(ImageTooLargeError) as error:
        decode(data, max_pixels=59)
    assert str(error.value) == "image is 10x6 = 60 pixels; the limit is 59 pixels (--max-image-pixels)"


def test_pixel_limit_uses_the_header_without_decoding_the_pixels():
    data = png_header_only(100, 100)
    with pytest.raises(ImageTooLargeError, match=r"^image is 100x100 = 10000 pixels; the limit is 9999 "):
        decode(data, max_pixels=9999)
    with pytest.raises(ImageDecodeError) as error:  # within the limit: now the garbage pixels are decoded
        decode(data, max_pixels=10000)
    assert type(error.value) is ImageDecodeError
    assert str(error.value).startswith("image: cannot decode the PNG data (")


def test_a_huge_header_is_refused_with_the_default_limit():
    with pytest.raises(ImageTooLargeError) as error:
        decode(png_header_only(10_000, 5_001), max_pixels=DEFAULT_MAX_IMAGE_PIXELS)
    assert str(error.value) == (
        "image is 10000x5001 = 50010000 pixels; the limit is 50000000 pixels (--max-image-pixels)"
    )
    with pytest.raises(ImageTooLargeError, match=r"^image is too large: "):  # Pillow's own bomb ceiling
        decode(png_header_only(20_000, 10_000), max_pixels=DEFAULT_MAX_IMAGE_PIXELS)


# ----- unusable data ---------------------------------------------------------------------------------------
def test_empty_data_is_named():
    with pytest.raises(ImageDecodeError, match=r"^image is empty$"):
        decode(b"")


@pytest.mark.parametrize(
    ("file_format", "label"), [("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF"), ("ICO", "ICO")]
)
def test_other_image_formats_are_unsupported_naming_the_format(file_format, label):
    with pytest.raises(UnsupportedImageFormatError) as error:
        decode(encode(Image.fromarray(pattern()), file_format))
    assert str(error.value) == f"image is a {label} image; the accepted formats are PNG, JPEG and WebP"


def test_data_that_is_no_image_is_a_decode_error():
    with pytest.raises(ImageDecodeError) as error:
        decode(b"hello world, no image here")
    assert type(error.value) is ImageDecodeError
    assert str(error.value) == (
        "image: cannot decode: not a PNG, JPEG or WebP file (the data starts with 68 65 6c 6c 6f 20 77 6f)"
    )


@pytest.mark.parametrize(
    ("file_format", "message"),
    [
        ("PNG", "image: cannot decode the PNG data (image file is truncated"),
        ("JPEG", "image: cannot decode the JPEG data (image file is truncated"),
        ("WEBP", "image: cannot decode the image header ("),  # Pillow decodes WebP while opening it
    ],
)
def test_truncated_data_is_a_decode_error(file_format, message):
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), file_format)
    with pytest.raises(ImageDecodeError) as error:
        decode(data[: len(data) * 2 // 3])
    assert type(error.value) is ImageDecodeError
    assert str(error.value).startswith(message)


def test_corrupt_png_data_is_a_decode_error():
    data = bytearray(encode(Image.fromarray(pattern(32, 32)), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start : start + 16] = bytes(16)  # zeroed compressed data (and a wrong CRC)
    with pytest.raises(ImageDecodeError, match=r"^image: cannot decode the PNG data \("):
        decode(bytes(data))


def test_the_field_name_starts_every_message():
    with pytest.raises(ImageDecodeError, match=r"^frame is empty$") as error:
        decode_image(b"", MAX_BYTES, MAX_PIXELS, field="frame")
    assert error.value.field == "frame"
