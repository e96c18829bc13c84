"""Reading one job's multipart body within the server's limits, and splitting it into files
and form values. Every way a body can be unusable ends in an UploadError (or ClientGone when
the client left mid-upload, which needs no answer)."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request

from .uploads import FILE_FIELDS, Limits, UploadError, form_options

MAX_PART_BYTES = 64 * 1024  # one form value (files are bounded by max_upload_mb)
TAIL_BYTES = 256  # enough of the body's end to see its closing boundary


class ClientGone(Exception):
    """The client closed the connection before its upload was complete: log one line, answer nothing."""


def _boundary(content_type: str) -> bytes:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary":
            return value.strip('"').encode("latin-1", "replace")
    raise UploadError(400, "malformed upload: multipart/form-data without a boundary")


async def read_form(request: Request, limits: Limits):
    """The parsed form, or UploadError: 415 not multipart, 413 over the size limit, 400 malformed
    (including a body cut short before its closing boundary), 422 too many files or fields."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UploadError(415, "send multipart/form-data: a file field 'content', file field(s) 'style' "
                               "and the parameters as form fields")
    boundary = _boundary(content_type)
    too_large = UploadError(413, f"the upload is over this server's limit of {limits.max_upload_mb:g} MB "
                                 "per job; send smaller images")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limits.max_upload_bytes:
        raise too_large
    received, tail = 0, b""

    async def receive():  # also stops a body without Content-Length at the limit
        nonlocal received, tail
        message = await request.receive()
        chunk = message.get("body", b"")
        received += len(chunk)
        tail = (tail + chunk)[-TAIL_BYTES:]
        if received > limits.max_upload_bytes:
            raise too_large
        return message

    try:
        form = await Request(request.scope, receive).form(
            max_files=limits.max_files, max_fields=len(form_options()) + 4, max_part_size=MAX_PART_BYTES)
    except ClientDisconnect:
        raise ClientGone() from None
    except StarletteHTTPException as exc:  # Starlette's multipart limits and parse errors
        if "Too many files" in str(exc.detail):
            raise UploadError(422, f"too many files: send one content image, at most {limits.max_styles} style "
                                   "images and one mask per style image") from None
        raise UploadError(400, f"malformed upload: {exc.detail}") from None
    if b"--" + boundary + b"--" not in tail:  # the closing boundary, perhaps followed by a short epilogue
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
