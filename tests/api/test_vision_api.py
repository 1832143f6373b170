"""Images over HTTP: the real server and engine on the tiny model directory (which has the vision stage),
images posted as base64 PNG/JPEG/WebP to /omni/streaming_prefill alone or with audio and text, the
high-detail slices, every error path with its status and message, the session still usable after each, and
the 501 of a model directory without the vision file. Expected position counts come from
omni_engine.plan_image_slices, the vision file's own sizes and the tiny LLM's tokenizer."""

from __future__ import annotations

import asyncio
import base64
import io
import shutil
import struct
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from api_helpers import (
    GREEDY,
    assert_error,
    assert_usable,
    assert_well_formed,
    generate,
    init,
    prefill,
    session_status,
    start_server,
    stop_server,
)
from PIL import Image

import omni_engine
from omni_app.engine import EngineConfig, InvalidInputError, OmniEngine, SessionConfig
from omni_app.tiny_models.llm import llm_file_name
from omni_app.tiny_models.vision import VISION_FILE

IMAGE_MISSING = (
    "image input needs the vision encoder stage, which this model directory does not provide "
    "(vision/MiniCPM-o-4_5-vision-F16.gguf is missing)"
)
OVERVIEW_POSITIONS = 66  # <image> + 64 rows + </image>
ONE_SECOND_AUDIO_POSITIONS = 12  # <|audio_start|> + 10 rows + <|audio_end|>
MARKERS_PER_CHUNK = 2  # <image>/</image> around the overview, <slice>/</slice> around each slice


# ----- images -----------------------------------------------------------------------------------------------
def pattern(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Noise: every image differs, but it does not compress (keep it small: the test server's body limit is
    1 MB)."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def gradient(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth image that compresses well: for the large images."""
    y, x = np.mgrid[0:height, 0:width]
    channels = [(x * (3 + seed) + y * 2) % 256, (y * (5 + seed)) % 256, (x + y * (1 + seed)) % 256]
    return np.stack(channels, axis=2).astype(np.uint8)


def encode(rgb: np.ndarray, file_format: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, file_format, **options)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says width x height, with garbage pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        checksum = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + checksum

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"garbage") + chunk(b"IEND", b"")


def tone_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype("<f4").tobytes()  # raw float32 16 kHz


SMALL = pattern(30, 40)
SMALL_PNG = encode(SMALL)


# ----- expected position counts -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vision(tiny_model_dir: Path) -> omni_engine.VisionEncoder:
    return omni_engine.VisionEncoder(str(tiny_model_dir / VISION_FILE))


@pytest.fixture(scope="module")
def llm(tiny_llm_path: Path) -> omni_engine.Llm:
    return omni_engine.Llm(str(tiny_llm_path), n_ctx=256)


def image_positions(
    vision: omni_engine.VisionEncoder, llm: omni_engine.Llm, width: int, height: int, max_slices: int
) -> int:
    """The PyTorch reference layout: overview, slices row-major, "\\n" between grid rows (none at the end)."""
    plan = omni_engine.plan_image_slices(width, height, max_slices, vision.image_size, vision.patch_size)
    chunk = vision.n_query + MARKERS_PER_CHUNK
    if plan["grid"] is None:
        return chunk
    columns, rows = plan["grid"]
    return chunk * (1 + columns * rows) + (rows - 1) * len(llm.tokenize("\n", False))


# ----- requests ---------------------------------------------------------------------------------------------
def post_prefill(client: httpx.Client, **body: object) -> httpx.Response:
    return client.post("/omni/streaming_prefill", json={**body, "idx": 0})


def prefill_image(client: httpx.Client, data: bytes, **body: object) -> dict:
    response = post_prefill(client, image=b64(data), **body)
    assert response.status_code == 200, response.text
    return response.json()


def answer_after(client: httpx.Client, *bodies: dict, max_new_tokens: int = 6) -> str:
    """Greedy answer of a fresh omni conversation after the given prefill bodies."""
    init(client, media_type="omni")
    for body in bodies:
        response = post_prefill(client, **body)
        assert response.status_code == 200, response.text
    return generate(client, max_new_tokens=max_new_tokens).text


@pytest.fixture
def session(client: httpx.Client) -> dict:
    return init(client, media_type="omni")


# ----- image turns ------------------------------------------------------------------------------------------
def test_image_alone_is_66_positions_and_answers(client, session):
    assert session["stages"]["vision"] is True
    assert client.get("/health").json()["stages"]["vision"] is True
    assert (session["high_quality_mode"], session["max_slice_nums"]) == (False, 0)
    body = prefill_image(client, SMALL_PNG)
    assert body == {
        "success": True,
        "index": 1,
        "n_tokens": OVERVIEW_POSITIONS,
        "n_image_positions": OVERVIEW_POSITIONS,
        "image_size": [40, 30],
        "n_audio_positions": 0,
        "n_text_tokens": 0,
        "audio_seconds": None,
    }
    assert session_status(client)["n_past"] == session["n_keep"] + OVERVIEW_POSITIONS
    stream = generate(client, max_new_tokens=5)
    assert_well_formed(stream, "max_tokens")
    assert stream.only("stats")["stats"]["decode_tokens"] == 5
    assert_usable(client)


def test_the_image_reaches_the_model(client):
    from_png = answer_after(client, {"image": b64(SMALL_PNG), "text": "What is this?"})
    same_pixels = {"image": b64(encode(SMALL, "WEBP", lossless=True)), "text": "What is this?"}
    assert answer_after(client, same_pixels) == from_png
    other_image = {"image": b64(encode(np.zeros_like(SMALL))), "text": "What is this?"}
    assert answer_after(client, other_image) != from_png


def test_image_and_text_in_one_prefill_equal_image_then_text(client):
    start = init(client, media_type="omni")
    both = prefill_image(client, SMALL_PNG, text="describe it")
    assert (both["index"], both["n_image_positions"], both["n_audio_positions"]) == (1, OVERVIEW_POSITIONS, 0)
    assert both["n_text_tokens"] > 0
    assert both["n_tokens"] == OVERVIEW_POSITIONS + both["n_text_tokens"]
    assert session_status(client)["n_past"] == start["n_keep"] + both["n_tokens"]
    answer_both = generate(client, max_new_tokens=6).text

    separate = answer_after(client, {"image": b64(SMALL_PNG)}, {"text": "describe it"})
    assert separate == answer_both  # the order inside the context: test_prefill_order_in_the_context


def test_image_audio_and_text_are_added_in_that_order(client):
    image, audio = b64(SMALL_PNG), b64(tone_wav())
    init(client, media_type="omni")
    body = post_prefill(client, image=image, audio=audio, text="what do you see and hear?").json()
    assert (body["n_image_positions"], body["n_audio_positions"], body["audio_seconds"]) == (
        OVERVIEW_POSITIONS,
        ONE_SECOND_AUDIO_POSITIONS,
        1.0,
    )
    assert body["n_tokens"] == OVERVIEW_POSITIONS + ONE_SECOND_AUDIO_POSITIONS + body["n_text_tokens"]
    assert body["image_size"] == [40, 30] and body["index"] == 1
    together = generate(client, max_new_tokens=6).text

    steps = ({"image": image}, {"audio": audio}, {"text": "what do you see and hear?"})
    assert answer_after(client, *steps) == together


def test_image_with_audio_only(client, session):
    body = prefill_image(client, encode(SMALL, "JPEG", quality=90), audio=b64(tone_wav(0.5)))
    assert (body["n_image_positions"], body["n_audio_positions"], body["n_text_tokens"]) == (
        OVERVIEW_POSITIONS,
        7,
        0,
    )
    assert_well_formed(generate(client, max_new_tokens=3), "max_tokens")


def test_exif_orientation_is_applied_before_encoding(client, session):
    image = Image.fromarray(SMALL)  # stored 40 x 30, shown rotated: 30 x 40
    exif = image.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    assert prefill_image(client, buffer.getvalue())["image_size"] == [30, 40]


# ----- slices -----------------------------------------------------------------------------------------------
TALL, WIDE, SQUARE = gradient(600, 300, 1), gradient(300, 600, 2), gradient(600, 600, 3)


def test_high_quality_mode_slices_a_large_image(client, vision, llm):
    start = init(client, media_type="omni", high_quality_mode=True)
    assert (start["high_quality_mode"], start["max_slice_nums"]) == (True, 2)
    tall = prefill_image(client, encode(TALL))
    plan = omni_engine.plan_image_slices(300, 600, 2, vision.image_size, vision.patch_size)
    assert plan["grid"] == (1, 2)  # two grid rows: one "\n" between them
    assert tall["n_image_positions"] == image_positions(vision, llm, 300, 600, 2)
    assert tall["n_image_positions"] == 3 * OVERVIEW_POSITIONS + len(llm.tokenize("\n", False))
    wide = prefill_image(client, encode(WIDE))
    assert wide["n_image_positions"] == image_positions(vision, llm, 600, 300, 2) == 3 * OVERVIEW_POSITIONS
    small = prefill_image(client, SMALL_PNG)  # smaller than one slice: nothing to slice
    assert small["n_image_positions"] == OVERVIEW_POSITIONS
    total = tall["n_tokens"] + wide["n_tokens"] + small["n_tokens"]
    assert session_status(client)["n_past"] == start["n_keep"] + total
    assert_well_formed(generate(client, max_new_tokens=3), "max_tokens")


def test_max_slice_nums_overrides_the_session_for_one_image(client, vision, llm):
    init(client, media_type="omni")
    nine = prefill_image(client, encode(SQUARE), max_slice_nums=9)
    grid = omni_engine.plan_image_slices(600, 600, 9, vision.image_size, vision.patch_size)["grid"]
    assert grid[1] > 1  # several grid rows, so newlines are counted too
    assert nine["n_image_positions"] == image_positions(vision, llm, 600, 600, 9)
    assert prefill_image(client, encode(SQUARE))["n_image_positions"] == OVERVIEW_POSITIONS  # session: 0

    init(client, media_type="omni", high_quality_mode=True)
    assert prefill_image(client, encode(SQUARE), max_slice_nums=0)["n_image_positions"] == OVERVIEW_POSITIONS
    assert prefill_image(client, encode(SQUARE))["n_image_positions"] == image_positions(
        vision, llm, 600, 600, 2
    )
    assert_usable(client)


# ----- bad images: status, message, nothing added, session usable -------------------------------------------
ACCEPTED = "the accepted formats are PNG, JPEG and WebP"
TRUNCATED_PNG = encode(pattern(64, 64, 4))[:2000]
ONE_PIXEL_WIDE = encode(np.zeros((2_000_000, 1, 3), np.uint8))  # compresses to a few kB
BAD_IMAGES = [
    ("empty", "", 400, "image is empty"),
    ("bad_base64", "not base64!", 400, "image: not valid base64 ("),
    (
        "not_an_image",
        b64(b"hello world, no image"),
        400,
        "image: cannot decode: not a PNG, JPEG or WebP file (the data starts with 68 65 6c 6c 6f 20 77 6f)",
    ),
    ("truncated_png", b64(TRUNCATED_PNG), 400, "image: cannot decode the PNG data ("),
    ("gif", b64(encode(SMALL, "GIF")), 415, f"image is a GIF image; {ACCEPTED}"),
    ("bmp", b64(encode(SMALL, "BMP")), 415, f"image is a BMP image; {ACCEPTED}"),
    (
        "too_many_pixels",
        b64(png_header_only(10_000, 5_001)),
        413,
        "image is 10000x5001 = 50010000 pixels; the limit is 50000000 pixels (--max-image-pixels)",
    ),
    (
        "extreme_aspect_ratio",
        b64(ONE_PIXEL_WIDE),
        400,
        "image: aspect ratio too extreme, a 14x79198 chunk has 5657 patches (at most 4900)",
    ),
]


@pytest.mark.parametrize(
    ("image", "status", "message"), [case[1:] for case in BAD_IMAGES], ids=[case[0] for case in BAD_IMAGES]
)
def test_bad_image_is_4xx_naming_image_and_changes_nothing(client, session, image, status, message):
    prefill(client, "hello")
    before = session_status(client)
    response = post_prefill(client, image=image, text="and this text is not added either")
    assert_error(response, status, message)
    assert session_status(client) == before
    assert prefill_image(client, SMALL_PNG)["n_image_positions"] == OVERVIEW_POSITIONS  # images still work
    assert_usable(client)


def test_extreme_aspect_ratio_message_matches_the_plan(vision):
    plan = omni_engine.plan_image_slices(1, 2_000_000, 0, vision.image_size, vision.patch_size)
    width, height = plan["overview"]
    assert (width, height) == (14, 79198)
    assert (width // vision.patch_size) * (height // vision.patch_size) == 5657 > 70 * 70


@pytest.mark.parametrize("value", [-1, 10, "two", 2.5])
def test_max_slice_nums_out_of_range_is_422(client, session, value):
    before = session_status(client)
    response = post_prefill(client, image=b64(SMALL_PNG), max_slice_nums=value)
    assert response.status_code == 422
    assert response.json()["error"].startswith("invalid request: max_slice_nums: ")
    assert session_status(client) == before


def test_high_quality_mode_must_be_a_boolean(client):
    response = client.post("/omni/init_sys_prompt", json={**GREEDY, "high_quality_mode": "very"})
    assert response.status_code == 422
    assert response.json()["error"].startswith("invalid request: high_quality_mode: ")


# ----- the omni system prompt -------------------------------------------------------------------------------
def test_media_type_omni_selects_the_omni_system_prompt(client, llm):
    def prompt_length(media: str) -> int:
        return len(llm.tokenize(omni_engine.internals.system_prompt(media, "en")["text_only"]))

    omni, audio = init(client, media_type="omni"), init(client, media_type="audio")
    assert (omni["media_type_name"], audio["media_type_name"]) == ("omni", "audio")
    assert omni["n_keep"] == prompt_length("omni")
    assert audio["n_keep"] == prompt_length("audio")
    assert omni["n_keep"] != audio["n_keep"]


def context_after(model_dir: Path, media: str, *prefills: dict) -> tuple[list[int], int]:
    """(context tokens, n_keep) of a fresh session of the server's adapter (OmniEngine) on the real engine
    after the given OmniEngine.prefill calls; rows of embeddings read as -1."""

    async def run() -> tuple[list[int], int]:
        adapter = OmniEngine(EngineConfig(model_dir=model_dir, n_ctx=1024, n_threads=2))
        await adapter.load()
        try:
            await adapter.start_session(SessionConfig(media_type=media, language="en", speak=False))
            for arguments in prefills:
                await adapter.prefill(**arguments)
            return list(adapter._engine.context_tokens()), adapter.status()["n_keep"]
        finally:
            await adapter.close()

    return asyncio.run(run())


def test_omni_session_context_starts_with_the_omni_prompt(tiny_model_dir, llm):
    """The same through the adapter the server uses, reading the engine's context token by token."""
    for media in ("omni", "audio"):
        prompt = omni_engine.internals.system_prompt(media, "en")["text_only"]
        context, n_keep = context_after(tiny_model_dir, media)
        assert context == list(llm.tokenize(prompt)) and n_keep == len(context), media
    omni_prompt = omni_engine.internals.system_prompt("omni", "en")["text_only"]
    assert omni_prompt != omni_engine.internals.system_prompt("audio", "en")["text_only"]


def rows(count: int) -> list[int]:
    return [-1] * count


def test_prefill_order_in_the_context_is_image_audio_text(tiny_model_dir, llm, vision):
    def token(text: str) -> int:
        (only,) = llm.tokenize(text)
        return only

    pcm = np.frombuffer(tone_wav(), dtype="<f4").copy()
    one_step = {"text": "hi there", "pcm": pcm, "image": SMALL}
    context, n_keep = context_after(tiny_model_dir, "omni", one_step)
    image = [token("<image>"), *rows(vision.n_query), token("</image>")]
    audio = [token("<|audio_start|>"), *rows(10), token("<|audio_end|>")]
    assert context[n_keep:] == image + audio + list(llm.tokenize("hi there", False))


def test_slices_in_the_context_follow_the_reference_layout(tiny_model_dir, llm, vision):
    def token(text: str) -> int:
        (only,) = llm.tokenize(text)
        return only

    context, n_keep = context_after(tiny_model_dir, "omni", {"image": TALL, "max_slices": 2})
    overview = [token("<image>"), *rows(vision.n_query), token("</image>")]
    one_slice = [token("<slice>"), *rows(vision.n_query), token("</slice>")]
    newline = list(llm.tokenize("\n", False))
    assert context[n_keep:] == overview + one_slice + newline + one_slice  # grid (1, 2): two rows
    context, n_keep = context_after(tiny_model_dir, "omni", {"image": WIDE, "max_slices": 2})
    assert context[n_keep:] == overview + one_slice + one_slice  # grid (2, 1): one row, no newline


# ----- a server with small image limits and a small context ------------------------------------------------
@pytest.fixture(scope="module")
def limits_server(tiny_model_dir, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("image_limits_server") / "server.log"
    limits = ("--max-image-bytes", "3000", "--max-image-pixels", "40000")
    running = start_server(tiny_model_dir, log_path, *limits, "--n-ctx", "256", "--threads", "2")
    yield running
    stop_server(running)


def test_image_limit_flags_set_the_limits(limits_server):
    noisy = encode(pattern(40, 40, 5))  # noise does not compress
    flat = encode(np.full((200, 200, 3), 90, np.uint8))  # 40000 pixels: at the limit
    assert len(noisy) > 3000 and len(flat) <= 3000
    with limits_server.client() as client:
        init(client, media_type="omni")
        assert prefill_image(client, flat)["n_image_positions"] == OVERVIEW_POSITIONS
        too_big = post_prefill(client, image=b64(noisy))
        assert too_big.status_code == 413
        assert too_big.json() == {
            "error": f"image is {len(noisy)} bytes; the limit is 3000 bytes (--max-image-bytes)"
        }
        too_many = post_prefill(client, image=b64(encode(np.zeros((200, 201, 3), np.uint8))))
        assert too_many.status_code == 413
        assert too_many.json() == {
            "error": "image is 201x200 = 40200 pixels; the limit is 40000 pixels (--max-image-pixels)"
        }
        assert_well_formed(generate(client, max_new_tokens=2), "max_tokens")


def test_an_image_that_does_not_fit_the_context_is_413(limits_server, vision, llm):
    with limits_server.client() as client:
        start = init(client, media_type="omni")
        n_keep = start["n_keep"]
        positions = image_positions(vision, llm, 200, 200, 9)  # a 3 x 3 grid: 10 chunks and 2 newlines
        assert positions > 256 - n_keep
        response = post_prefill(
            client, image=b64(encode(np.full((200, 200, 3), 90, np.uint8))), max_slice_nums=9
        )
        assert response.status_code == 413
        assert response.json() == {
            "error": f"the input of {positions} tokens does not fit the context (n_ctx 256, system prompt "
            f"{n_keep} tokens, {n_keep} in use)"
        }
        assert session_status(client)["n_past"] == n_keep
        assert_usable(client)


# ----- a model directory without the vision file ------------------------------------------------------------
@pytest.fixture(scope="module")
def no_vision_server(tiny_model_dir, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("no_vision")
    shutil.copyfile(tiny_model_dir / llm_file_name("f16"), model_dir / llm_file_name("f16"))
    running = start_server(model_dir, model_dir / "server.log", "--threads", "2")
    yield running
    stop_server(running)


def test_without_the_vision_file_images_are_501_and_text_works(no_vision_server):
    with no_vision_server.client() as client:
        start = init(client, media_type="omni")
        assert start["stages"]["vision"] is False
        assert client.get("/health").json()["stages"]["vision"] is False
        for body in ({"image": b64(SMALL_PNG)}, {"image": b64(SMALL_PNG), "text": "hello"}):
            response = post_prefill(client, **body)
            assert response.status_code == 501
            assert response.json() == {"error": IMAGE_MISSING}
            assert session_status(client)["n_past"] == start["n_keep"]
        assert_usable(client)


def test_adapter_refuses_a_non_uint8_image_instead_of_casting_it(tiny_model_dir):
    async def run() -> None:
        adapter = OmniEngine(EngineConfig(model_dir=tiny_model_dir, n_ctx=1024, n_threads=2))
        await adapter.load()
        try:
            await adapter.start_session(SessionConfig(media_type="omni", language="en", speak=False))
            n_past = adapter.status()["n_past"]
            with pytest.raises(InvalidInputError, match=r"^image: rgb must be a uint8 array.*float32"):
                await adapter.prefill(image=np.full((30, 40, 3), 0.5, dtype=np.float32))
            assert adapter.status()["n_past"] == n_past
            result = await adapter.prefill(image=np.zeros((30, 40, 3), dtype=np.uint8))
            assert result.n_image_positions == 66
        finally:
            await adapter.close()

    asyncio.run(run())
