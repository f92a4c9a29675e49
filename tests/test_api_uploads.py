"""Hostile and awkward uploads: each case by name; all go through models.imageio.open_image."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_service_fixtures import (
    assert_exact_top,
    encoder_for,
    image_bytes,
    image_vector,
    make_settings,
)

from app.core.uploads import UploadLimitMiddleware
from app.main import create_app

SEARCH = "/api/search/image"


@pytest.fixture(scope="module")
def small_limit_client(built_settings):
    """The same index behind an upload limit of 0.05 MB (52,428 bytes)."""
    settings = make_settings(built_settings.home, max_upload_mb=0.05)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def encoder():
    return encoder_for("tiny")


def upload(client, data: bytes, *, path: str = SEARCH, name: str = "upload.bin", k: int = 5):
    return client.post(path, params={"k": k}, files={"file": (name, data, "application/octet-stream")})


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height``: a decompression bomb for free."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def noisy_jpeg(size: int = 96) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "JPEG", quality=95)
    return buf.getvalue()


def animated_gif() -> tuple[bytes, bytes]:
    """(a two-frame GIF, its first frame alone as PNG)."""
    first = Image.open(io.BytesIO(image_bytes("RGB"))).convert("RGB")
    second = Image.new("RGB", first.size, (250, 10, 10))
    frames = [f.convert("P", palette=Image.Palette.ADAPTIVE) for f in (first, second)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    still = io.BytesIO()
    frames[0].convert("RGB").save(still, "PNG")
    return gif.getvalue(), still.getvalue()


# ---- refused: 4xx with a message, never 5xx -------------------------------------------------


def test_missing_file_field_is_422(client):
    r = client.post(SEARCH)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "file"]


def test_wrong_field_name_is_422(client):
    r = client.post(SEARCH, files={"image": ("a.png", image_bytes(), "image/png")})
    assert r.status_code == 422
    assert "file" in str(r.json()["detail"])


@pytest.mark.parametrize("path", [SEARCH, "/api/search/image-to-image"])
def test_non_image_bytes_are_422(client, path):
    r = upload(client, b"this is a text file, not a picture\n" * 20, path=path, name="fake.jpg")
    assert r.status_code == 422
    assert "not a recognised image format" in r.json()["detail"]


def test_empty_file_is_422(client):
    r = upload(client, b"", name="empty.jpg")
    assert r.status_code == 422
    assert "empty" in r.json()["detail"]


def test_truncated_jpeg_is_422(client):
    data = noisy_jpeg()
    assert upload(client, data).status_code == 200  # the whole file is fine
    r = upload(client, data[: len(data) // 2], name="cut.jpg")
    assert r.status_code == 422
    assert "truncated" in r.json()["detail"]


@pytest.mark.parametrize("size", [(50_000, 50_000), (12_000, 12_000)], ids=["50000x50000", "12000x12000"])
def test_decompression_bomb_is_422(client, size):
    data = png_claiming(*size)
    assert len(data) < 200  # the bomb costs nothing to send; decoding it would cost gigabytes
    r = upload(client, data, name="bomb.png")
    assert r.status_code == 422
    assert "too large" in r.json()["detail"]


def test_over_size_upload_is_413_with_the_message(small_limit_client):
    r = upload(small_limit_client, b"\xff" * 300_000, name="big.jpg")
    assert r.status_code == 413
    assert "0.05 MB" in r.json()["detail"]


def test_over_size_file_just_past_the_limit_is_413(small_limit_client):
    limit = int(0.05 * 1024 * 1024)
    data = image_bytes(fmt="PNG") + b"\x00" * (limit + 1)  # body within the multipart slack
    r = upload(small_limit_client, data, name="big.png")
    assert r.status_code == 413
    assert "upload too large" in r.json()["detail"]


def test_over_size_chunked_upload_without_length_is_413(small_limit_client):
    boundary = "tuwenboundary"

    def body():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        for _ in range(20):  # 20 x 16 KiB, streamed with no Content-Length
            yield b"\xff" * 16384
        yield f"\r\n--{boundary}--\r\n".encode()

    r = small_limit_client.post(
        SEARCH, content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert r.status_code == 413
    assert "upload too large" in r.json()["detail"]


def _guarded(max_upload_bytes: int, body_chunks: int, chunk: int):
    """Run the guard on a declared-oversized body; (messages sent, body bytes read)."""
    sent: list[dict] = []
    read = 0

    async def app(scope, receive, send):  # pragma: no cover - must not be reached
        raise AssertionError("the app was called")

    async def receive():
        nonlocal read
        read += chunk
        return {"type": "http.request", "body": b"x" * chunk, "more_body": read < body_chunks * chunk}

    async def send(message):
        sent.append(message)

    guard = UploadLimitMiddleware(app, max_upload_bytes=max_upload_bytes)
    length = str(body_chunks * chunk).encode()
    scope = {"type": "http", "method": "POST", "path": SEARCH, "headers": [(b"content-length", length)]}
    asyncio.run(guard(scope, receive, send))
    return sent, read


def test_a_declared_over_size_body_is_drained_not_passed_on():
    sent, read = _guarded(1000, body_chunks=10, chunk=100_000)
    assert sent[0]["status"] == 413
    assert read == 1_000_000  # read to its end, so the client can read the answer
    assert (b"connection", b"close") not in sent[0]["headers"]


def test_a_body_past_the_drain_bound_is_not_read_and_the_connection_closes():
    sent, read = _guarded(1000, body_chunks=1000, chunk=100_000)  # 100 MB > the 64 MB bound
    assert sent[0]["status"] == 413
    assert read == 0
    assert (b"connection", b"close") in sent[0]["headers"]


# ---- accepted: awkward but valid images give the same results as the shared decoder ---------


@pytest.mark.parametrize(
    ("case", "data"),
    [
        ("cmyk_jpeg", image_bytes("CMYK", fmt="JPEG")),
        ("rgba_png", image_bytes("RGBA", fmt="PNG")),
        ("palette_png", image_bytes("P", fmt="PNG", transparency=0)),
        ("grayscale_png", image_bytes("L", fmt="PNG")),
        ("one_pixel_high", image_bytes("RGB", size=(64, 1), fmt="PNG")),
        ("webp", image_bytes("RGB", fmt="WEBP")),
    ],
)
def test_awkward_images_are_searched(client, built_settings, encoder, case, data):
    r = upload(client, data, name=f"{case}.jpg", k=5)  # the name lies: the content decides
    assert r.status_code == 200, r.text
    got = [h["text_id"] for h in r.json()["results"]]
    assert_exact_top(built_settings, image_vector(encoder, data), "text_candidates", got)


def test_animated_gif_uses_its_first_frame(client):
    gif, first_frame = animated_gif()
    with Image.open(io.BytesIO(gif)) as img:
        assert img.n_frames == 2
    a = upload(client, gif, path="/api/search/image-to-image", k=8)
    b = upload(client, first_frame, path="/api/search/image-to-image", k=8)
    assert a.status_code == b.status_code == 200
    hits_a, hits_b = a.json()["results"], b.json()["results"]
    assert [h["image_id"] for h in hits_a] == [h["image_id"] for h in hits_b]
    assert [h["score"] for h in hits_a] == pytest.approx([h["score"] for h in hits_b])


# ---- a 413 that clients which send the whole body before reading can read ---------------------


@pytest.fixture(scope="module")
def small_limit_server(built_settings):
    """A real uvicorn server on 127.0.0.1 (a free port) with the 0.05 MB upload limit."""
    import threading
    import time

    import uvicorn

    config = uvicorn.Config(
        create_app(make_settings(built_settings.home, max_upload_mb=0.05)),
        host="127.0.0.1",
        port=0,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _multipart(data: bytes, boundary: str = "tuwenboundary") -> bytes:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode()


@pytest.mark.parametrize("size", [300_000, 3_000_000, 40_000_000])
def test_urllib_which_sends_the_whole_body_first_reads_the_413(small_limit_server, size):
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{small_limit_server}{SEARCH}",
        data=_multipart(b"\xff" * size),
        headers={"Content-Type": "multipart/form-data; boundary=tuwenboundary"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as caught:  # not ConnectionResetError
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 413
    assert "0.05 MB" in json.loads(caught.value.read())["detail"]


def test_raw_socket_chunked_body_written_whole_then_read_gets_413(small_limit_server):
    import socket

    host, port = small_limit_server.removeprefix("http://").split(":")
    body = _multipart(b"\xff" * 400_000)
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 8192]), body[i : i + 8192]) for i in range(0, len(body), 8192)
    )
    head = (
        f"POST {SEARCH} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: multipart/form-data; boundary=tuwenboundary\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + chunks + b"0\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
            if b"upload too large" in reply:
                break
    assert reply.startswith(b"HTTP/1.1 413")
    assert b"upload too large" in reply
