"""Reading one job's multipart body within the server's limits, and splitting it into files
and form values. Every way a body can be unusable ends in an UploadError (or ClientGone when
the client left mid-upload, which needs no answer)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request

from .limits import Limits, UploadError, shutting_down, too_large
from .uploads import FILE_FIELDS, form_options

MAX_PART_BYTES = 64 * 1024  # one form value (files are bounded by max_upload_mb)
POLL_SECONDS = 0.25  # how often a body that is being waited for checks the clock and the server's state
MAX_PREAMBLE_BYTES = 64 * 1024  # text before the first boundary (RFC 2046 allows it; python-multipart does not)


class ClientGone(Exception):
    """The client closed the connection before its upload was complete: log one line, answer nothing."""


def _boundary(content_type: str) -> bytes:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary":
            return value.strip('"').encode("latin-1", "replace")
    raise UploadError(400, "malformed upload: multipart/form-data without a boundary")


class _BodyReader:
    """The ASGI receive() a form is parsed from, within the server's limits: at most
    max_upload_bytes, all of it within upload_seconds and no pause longer than a quarter of that
    (408), and ended at once when the server stops (503). It also watches for the closing
    boundary, wherever it falls (python-multipart accepts a body cut short without one), and drops
    a preamble before the first boundary (which python-multipart refuses, though RFC 2046 allows it)."""

    def __init__(self, request: Request, limits: Limits, boundary: bytes, stopping: Callable[[], bool]):
        self.request, self.limits, self.stopping = request, limits, stopping
        self.marker = b"--" + boundary + b"--"
        self.opening, self.preamble = b"--" + boundary, b""  # preamble: None once the first boundary is seen
        self.received, self.carry, self.closed = 0, b"", False
        self.deadline = time.monotonic() + limits.upload_seconds
        self.pause = limits.upload_seconds / 4
        self.pending: asyncio.Future | None = None

    async def __call__(self) -> dict:
        if self.pending is None:
            self.pending = asyncio.ensure_future(self.request.receive())
        last = time.monotonic()
        while not self.pending.done():
            await asyncio.wait({self.pending}, timeout=POLL_SECONDS)
            now = time.monotonic()
            if self.pending.done():
                break
            if self.stopping():
                raise shutting_down()
            if now > self.deadline or now - last > self.pause:
                raise UploadError(408, f"the upload was too slow (this server waits {self.limits.upload_seconds:g} s "
                                       "for one job's files); send it again over a faster connection")
        message, self.pending = self.pending.result(), None
        chunk = message.get("body", b"")
        self.received += len(chunk)
        if self.received > self.limits.max_upload_bytes:
            raise too_large(self.limits)
        if self.preamble is not None:
            chunk = self._after_preamble(chunk, message.get("more_body", False))
            message = {**message, "body": chunk}
        window = self.carry + chunk
        self.closed = self.closed or self.marker in window
        self.carry = window[-len(self.marker):]
        return message

    def _after_preamble(self, chunk: bytes, more: bool) -> bytes:
        """The body from its first boundary on (held back until that boundary has arrived)."""
        data = self.preamble + chunk
        at = data.find(self.opening)
        while at > 0 and data[at - 2:at] != b"\r\n":  # a boundary starts a line
            at = data.find(self.opening, at + 1)
        if at >= 0:
            self.preamble = None
            return data[at:]
        if not more:  # no boundary at all: let the parser say the body is malformed
            self.preamble = None
            return data
        if len(data) > MAX_PREAMBLE_BYTES:
            raise UploadError(400, "malformed upload: no multipart boundary in the first 64 KB of the body")
        self.preamble = data
        return b""

    def cancel(self) -> None:
        if self.pending is not None:
            self.pending.cancel()


async def read_form(request: Request, limits: Limits, stopping: Callable[[], bool] = lambda: False):
    """The parsed form (its files spooled to disk, not held in memory), or UploadError: 415 not
    multipart, 413 over the size limit, 408 too slow, 400 malformed (including a body cut short
    before its closing boundary), 422 too many files or fields, 503 the server is stopping."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise UploadError(415, "send multipart/form-data: a file field 'content', file field(s) 'style' "
                               "and the parameters as form fields")
    boundary = _boundary(content_type)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limits.max_upload_bytes:
        raise too_large(limits)
    body = _BodyReader(request, limits, boundary, stopping)
    try:
        form = await Request(request.scope, body).form(
            max_files=limits.max_files, max_fields=len(form_options()) + 4, max_part_size=MAX_PART_BYTES)
    except ClientDisconnect:
        raise ClientGone() from None
    except StarletteHTTPException as exc:  # Starlette's multipart limits and parse errors
        if "Too many files" in str(exc.detail):
            raise UploadError(422, f"too many files: send one content image, at most {limits.max_styles} style "
                                   "images and one mask per style image") from None
        raise UploadError(400, f"malformed upload: {exc.detail}") from None
    finally:
        body.cancel()
    if not body.closed:
        await form.close()
        raise UploadError(400, "malformed upload: the body ends before its closing boundary; send it whole")
    return form


def split_form(form, limits: Limits):
    """(content file, style files, mask files, {field: text}) with the counts checked."""
    contents, styles, masks = (form.getlist(name) for name in FILE_FIELDS)
    values = {}
    for key, value in form.multi_items():
        if key in FILE_FIELDS:
            continue
        if not isinstance(value, str):
            raise UploadError(422, f"{key[:40]} must be a form field, not a file")
        if key in values:
            raise UploadError(422, f"{key[:40]} given twice")
        values[key] = value
    if len(contents) != 1 or not isinstance(contents[0], UploadFile):
        raise UploadError(422, "send exactly one content image, in the file field 'content'")
    if not styles or not all(isinstance(s, UploadFile) for s in styles):
        raise UploadError(422, "send at least one style image, in the file field 'style'")
    if len(styles) > limits.max_styles:
        raise UploadError(422, f"{len(styles)} style images; this server takes at most {limits.max_styles}")
    if not all(isinstance(m, UploadFile) for m in masks):
        raise UploadError(422, "style_mask must be a file, not a form field")
    if masks and len(masks) != len(styles):
        raise UploadError(422, f"{len(masks)} style mask(s) for {len(styles)} style image(s): "
                               "send one per style image, in the same order, or none")
    return contents[0], styles, masks, values
