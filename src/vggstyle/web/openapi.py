"""What the OpenAPI page (/docs) says about the API: the job upload's fields, generated from
StyleConfig's option specs, and every refusal the API answers with, each a JSON
``{"detail": "one line"}``."""

from __future__ import annotations

from ..config import BOOL, FLOAT, INT
from .uploads import form_options, page_field

# Swagger UI (swagger-ui-bundle 1.1: 4.15.5) renders OpenAPI 3.0 but not FastAPI's default 3.1.
OPENAPI_VERSION = "3.0.3"
_JSON_TYPES = {INT: "integer", FLOAT: "number", BOOL: "boolean"}


class Refusals(dict):
    """{status: {"description": ...}} for FastAPI's ``responses=``; subset() picks a route's own."""

    def subset(self, *codes: int) -> dict:
        return {code: self[code] for code in codes}


_DETAIL = {"application/json": {"schema": {"type": "object", "properties": {"detail": {"type": "string"}}}}}
REFUSALS = Refusals({code: {"description": text, "content": _DETAIL} for code, text in {
    400: "malformed upload (bad multipart body, cut short) or a Host header this server does not answer",
    403: "cross-origin request: use the page this server serves",
    404: "no such job (finished results are kept for a limited time)",
    408: "the upload arrived too slowly (the server's --upload-seconds, pauses of a quarter of that)",
    409: "the job has no result yet, or is still queued or running",
    413: "the upload, an image's or a video frame's pixel count, or a video's length is over this server's limit",
    415: "not multipart/form-data, or a file that is not an image (or, as the content, a video) this server reads",
    422: "a bad image or video (empty, damaged, too small) or parameter, one line saying which",
    503: "the queue is full or the server is shutting down; see Retry-After",
}.items()})


def job_request_schema() -> dict:
    """The multipart body of POST /api/jobs: the files, then every option a client may set."""
    properties = {
        "content": {"type": "string", "format": "binary",
                    "description": "the content image, or a video (mp4, mov, mkv, webm, avi, animated GIF; at most "
                                   "the server's --max-video-seconds, 10 s by default): the result is then an "
                                   "MP4 with the input's frame rate"},
        "style": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "one or more style images (repeat the field)"},
        "style_mask": {"type": "array", "items": {"type": "string", "format": "binary"},
                       "description": "optional: one grayscale mask per style image, in the same order, "
                                      "white where that style applies (repeat the field)"},
    }
    for o in form_options():
        field = page_field(o)
        properties[o.name] = {"type": _JSON_TYPES.get(o.kind, "string"), "description": field["help"]}
        if o.choices:
            properties[o.name]["enum"] = list(o.choices)
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["content", "style"], "properties": properties}}}}}
