"""Uploads: a request-size guard that answers 413 without handing the body on, and bounded reading.

A 413 sent while the client is still writing its body is lost for clients that write the whole
body before reading (urllib, requests): the server closes a connection with unread data, the
kernel answers with a reset, and the client reports "connection reset" instead of the message. So
the rest of an oversized body is read and discarded first, up to ``DRAIN_BYTES`` and
``DRAIN_SECONDS``; only a body past those bounds gets its 413 with the connection cut short.
"""

from __future__ import annotations

import json
import time

from fastapi import HTTPException, UploadFile
from PIL import Image
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.imageio import ImageDecodeError, open_image

READ_CHUNK = 64 * 1024
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file itself
DRAIN_BYTES = 64 * 1024 * 1024  # at least; 4x the cap when that is more (read at memory speed)
DRAIN_SECONDS = 10.0  # a slow client does not hold the connection longer than this


def too_large_detail(limit_bytes: int) -> str:
    return f"upload too large: the limit is {limit_bytes / (1024 * 1024):.3g} MB (TUWEN_MAX_UPLOAD_MB)"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a request body passes the limit; FastAPI re-raises it as is."""

    def __init__(self, limit_bytes: int):
        super().__init__(status_code=413, detail=too_large_detail(limit_bytes))


class UploadLimitMiddleware:
    """Caps every request body: a declared Content-Length over the cap is refused unread, and a
    chunked body is counted as it streams in, so no request can fill the disk or memory."""

    def __init__(self, app: ASGIApp, *, max_upload_bytes: int):
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.cap = max_upload_bytes + MULTIPART_SLACK
        self.drain_bytes = max(DRAIN_BYTES, 4 * self.cap)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.cap:
            drained = declared <= self.drain_bytes and await self._drain(receive, more=True)
            await _send_413(send, self.max_upload_bytes, close=not drained)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.cap:
                    await self._drain(receive, more=message.get("more_body", False), seen=seen)
                    raise BodyTooLarge(self.max_upload_bytes)
            return message

        await self.app(scope, counted, send)

    async def _drain(self, receive: Receive, *, more: bool, seen: int = 0) -> bool:
        """Read and discard the rest of the body within the bounds; True if all of it was read."""
        deadline = time.monotonic() + DRAIN_SECONDS
        while more:
            if seen > self.drain_bytes or time.monotonic() > deadline:
                return False
            message = await receive()
            if message["type"] != "http.request":
                return False  # the client went away
            seen += len(message.get("body", b""))
            more = message.get("more_body", False)
        return True


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Send, limit_bytes: int, *, close: bool = False) -> None:
    body = json.dumps({"detail": too_large_detail(limit_bytes)}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:  # the body was not read to its end: this connection cannot carry another request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_upload(file: UploadFile, *, limit_bytes: int) -> bytes:
    """The uploaded bytes, read a chunk at a time and refused with 413 past ``limit_bytes``."""
    buf = bytearray()
    while chunk := await file.read(READ_CHUNK):
        buf += chunk
        if len(buf) > limit_bytes:
            raise HTTPException(status_code=413, detail=too_large_detail(limit_bytes))
    if not buf:
        raise HTTPException(status_code=422, detail="the uploaded file is empty")
    return bytes(buf)


def decode_upload(data: bytes, *, resolution: int) -> Image.Image:
    """RGB image from uploaded bytes through the one guarded decoder; 422 with the reason if not."""
    try:
        return open_image(data, draft_size=(resolution, resolution))
    except ImageDecodeError as exc:
        raise HTTPException(status_code=422, detail=f"the upload is not a usable image: {exc}") from exc
