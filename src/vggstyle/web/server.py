"""`vggstyle serve`: the web page and its HTTP API (FastAPI; OpenAPI at /docs).

    POST   /api/jobs               multipart: file `content`, file(s) `style`, StyleConfig fields -> 202 job
    GET    /api/jobs/{id}          state, queue position, step, losses, ETA
    GET    /api/jobs/{id}/events   the same, as server-sent events, until the job ends
    GET    /api/jobs/{id}/preview  PNG of the image as it is now (the result once finished)
    GET    /api/jobs/{id}/result   PNG with the parameters in a 'vggstyle' text chunk
    DELETE /api/jobs/{id}          cancel (a finished job: discard its result)
    GET    /api/options            form fields with defaults and help, presets, limits
    GET    /api/status             workers and queue length

Refusals are JSON ``{"detail": "one line"}``: 413 too large, 415 not an image, 422 bad image
or parameter, 503 queue full. FastAPI is imported by create_app, so `import vggstyle.web.server`
and `vggstyle serve --help` work without the [web] extra.
"""

import argparse
import asyncio
import contextlib
import json
import logging
import socket
import sys
import threading
from dataclasses import fields
from pathlib import Path
from urllib.parse import urlsplit

from .jobs import FINISHED, JobQueue, QueueFull
from .uploads import Limits, UploadError, config_from_form, decode_image, form_fields, options, prepare_images

STATIC = Path(__file__).parent / "static"
EXIT_USAGE = 2
log = logging.getLogger("vggstyle.web")

# Security headers on every response; the page loads nothing from elsewhere and runs no inline
# script (FastAPI's /docs does both, so the policy is for our page only).
_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
_PAGE_CSP = b"default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'"
_PAGE_HEADERS = [(b"content-security-policy", _PAGE_CSP)]


def _request_schema() -> dict:
    """The multipart body of POST /api/jobs for the OpenAPI page, from StyleConfig's fields."""
    types = {"float": "number", "int": "integer", "bool": "boolean"}
    properties = {
        "content": {"type": "string", "format": "binary", "description": "the content image"},
        "style": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "one or more style images (repeat the field)"},
        "style_mask": {"type": "array", "items": {"type": "string", "format": "binary"},
                       "description": "optional: one grayscale mask per style image, in the same order, "
                                      "white where that style applies (repeat the field)"},
    }
    for f in form_fields():
        kind = str(f.type).replace(" | None", "")
        properties[f.name] = {"type": types.get(kind, "string"), "description": f.metadata["help"]}
        if "choices" in f.metadata:
            properties[f.name]["enum"] = list(f.metadata["choices"])
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["content", "style"], "properties": properties}}}}}


FILE_FIELDS = ("content", "style", "style_mask")  # multipart file fields; the rest are StyleConfig fields

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def create_app(limits: Limits | None = None, devices=("auto",), *, runner=None, allowed_hosts=None):
    """The FastAPI app with its own JobQueue (``app.state.jobs``), closed when the app shuts down.

    devices: one worker thread per entry ("auto", "cpu", "cuda:0", ...); runner replaces
    vggstyle.stylize (same signature), for tests and embedding; allowed_hosts: the Host header
    values to answer (`vggstyle serve` on a loopback address passes LOOPBACK_NAMES, so a web page
    elsewhere cannot reach the server by pointing its own name at 127.0.0.1: DNS rebinding).
    """
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from .. import __version__

    limits = (limits or Limits()).check()
    jobs = JobQueue(devices, max_queued=limits.max_queue, keep_results=limits.keep_results,
                    keep_seconds=limits.keep_minutes * 60, preview_every=limits.preview_every, runner=runner)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await run_in_threadpool(jobs.close)

    app = FastAPI(title="vggstyle", version=__version__, lifespan=lifespan, docs_url=None,
                  description="Neural style transfer (Gatys et al., VGG19): upload, queue, live preview.")
    app.state.jobs = jobs
    app.state.limits = limits

    @app.exception_handler(UploadError)
    async def _refused(request, exc: UploadError):
        headers = {"Retry-After": "30"} if exc.status == 503 else None
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)

    def _job_or_404(job_id: str):
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, "no such job (finished results are kept for a limited time)")
        return job

    def _check_origin(request: Request) -> None:
        # A web page elsewhere must not spend this machine's time: browsers send Origin on
        # cross-site POST/DELETE, programs usually send none.
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
            raise HTTPException(403, "cross-origin request refused: use the page this server serves")

    async def _read_form(request: Request):
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise UploadError(415, "send multipart/form-data: a file field 'content', file field(s) 'style' "
                                   "and the parameters as form fields")
        length = request.headers.get("content-length", "")
        too_large = UploadError(413, f"the upload is over this server's limit of {limits.max_upload_mb:g} MB "
                                     "per job; send smaller images")
        if length.isdigit() and int(length) > limits.max_upload_bytes:
            raise too_large
        received = 0

        async def receive():  # also stops a body without Content-Length at the limit
            nonlocal received
            message = await request.receive()
            received += len(message.get("body", b""))
            if received > limits.max_upload_bytes:
                raise too_large
            return message

        try:
            return await Request(request.scope, receive).form(
                max_files=limits.max_styles + 1, max_fields=len(form_fields()) + 4, max_part_size=64 * 1024)
        except StarletteHTTPException as exc:  # Starlette's multipart limits and parse errors
            if "Too many files" in str(exc.detail):
                raise UploadError(422, f"too many files: send one content image and at most "
                                       f"{limits.max_styles} style images") from None
            raise UploadError(400, f"malformed multipart body: {exc.detail}") from None

    @app.post("/api/jobs", status_code=202, summary="Start a stylization job",
              openapi_extra=_request_schema(),
              responses={413: {"description": "upload or image too large"}, 415: {"description": "not an image"},
                         422: {"description": "bad image or parameter"}, 503: {"description": "queue full"}})
    async def submit(request: Request):
        _check_origin(request)
        form = await _read_form(request)
        try:
            contents = form.getlist("content")
            styles = form.getlist("style")
            masks = form.getlist("style_mask")
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
            config = config_from_form(values, len(styles), limits)
            uploads = [(await f.read(), "content image" if i == 0 else f"style image {i}", f.filename)
                       for i, f in enumerate([contents[0], *styles])]
            mask_uploads = [(await f.read(), f"style mask {i}", f.filename) for i, f in enumerate(masks, 1)]
        finally:
            await form.close()

        def decode():
            images = [decode_image(data, what, name, limits) for data, what, name in uploads]
            mask_images = [decode_image(data, what, name, limits) for data, what, name in mask_uploads]
            return prepare_images(config, images[0], images[1:], mask_images)

        content, style_images, mask_images, size = await run_in_threadpool(decode)
        try:
            job = jobs.submit(config, content, style_images, size, masks=mask_images)
        except QueueFull as exc:
            raise UploadError(503, str(exc)) from None
        return JSONResponse(jobs.describe(job), status_code=202, headers={"Location": f"/api/jobs/{job.id}"})

    @app.get("/api/jobs/{job_id}", summary="State, queue position, progress, losses and ETA of a job")
    async def job_state(job_id: str):
        return jobs.describe(_job_or_404(job_id))

    @app.delete("/api/jobs/{job_id}", summary="Cancel a job; a finished job is discarded")
    async def cancel(job_id: str, request: Request):
        _check_origin(request)
        job = jobs.cancel(job_id)
        if job is None:
            raise HTTPException(404, "no such job")
        return jobs.describe(job)

    @app.get("/api/jobs/{job_id}/events", summary="Progress as server-sent events until the job ends")
    async def events(job_id: str, request: Request):
        job = _job_or_404(job_id)

        async def stream():
            seen, idle = -1, 0.0
            while True:
                if job.version != seen:
                    seen = job.version
                    snapshot = jobs.describe(job)
                    yield f"data: {json.dumps(snapshot)}\n\n"
                    if snapshot["state"] in FINISHED:
                        return
                    idle = 0.0
                elif idle >= 15.0:
                    yield ": keep-alive\n\n"
                    idle = 0.0
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.1)
                idle += 0.1

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _result_bytes(job) -> bytes | None:
        path = job.result_path
        if path is None:
            return None
        try:
            return await run_in_threadpool(path.read_bytes)
        except FileNotFoundError:  # discarded a moment ago
            return None

    @app.get("/api/jobs/{job_id}/preview", summary="The image as it is now (PNG)",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def preview(job_id: str):
        job = _job_or_404(job_id)
        data = job.preview or await _result_bytes(job)
        if data is None:
            raise HTTPException(404, "no preview yet: the job has not started its first iteration")
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/api/jobs/{job_id}/result", summary="The result (PNG with its parameters)",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def result(job_id: str):
        job = _job_or_404(job_id)
        if job.state not in FINISHED:
            raise HTTPException(409, f"the job is {job.state}; the result is ready when it is done")
        data = await _result_bytes(job)
        if data is None:
            raise HTTPException(409 if job.state == "failed" else 404,
                                f"no result: {job.error}" if job.error else "no result for this job")
        return Response(data, media_type="image/png",
                        headers={"Content-Disposition": f'attachment; filename="vggstyle-{job.number}.png"',
                                 "Cache-Control": "no-store"})

    @app.get("/api/options", summary="Form fields (from StyleConfig), presets and this server's limits")
    async def get_options():
        return options(limits)

    @app.get("/api/status", summary="Workers and queue length")
    async def status():
        return jobs.stats()

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_offline_docs(app, StaticFiles)
    app.add_middleware(_SecurityHeaders)
    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    return app


def _add_offline_docs(app, static_files) -> None:
    """Swagger UI at /docs from the swagger-ui-bundle package: FastAPI's default loads it from a
    CDN, which leaves the page blank on an offline machine."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", static_files(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="vggstyle API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="data:,")


class _SecurityHeaders:
    """Pure ASGI middleware adding the headers above to HTTP responses (streams pass through untouched)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        extra = _HEADERS + (_PAGE_HEADERS if scope["path"] == "/" or scope["path"].startswith("/static/") else [])

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ---------------------------------------------------------------------------- running it
def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host.strip("[]"), port), family=family)


@contextlib.contextmanager
def background_server(app, host: str = "127.0.0.1", port: int = 0):
    """Serve ``app`` with uvicorn in a thread (port 0: a free one); yield its base URL; stop it on exit."""
    import uvicorn

    sock = _bind(host, port)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="vggstyle-uvicorn")
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the web server did not start; see the log above")
            threading.Event().wait(0.02)
        bound_host, bound_port = sock.getsockname()[:2]
        yield f"http://{'[' + bound_host + ']' if ':' in bound_host else bound_host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vggstyle serve", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Serve the vggstyle web page and HTTP API (OpenAPI at /docs). Binds 127.0.0.1: only this "
                    "machine can reach it unless --host says otherwise.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every network)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--device", action="append", dest="devices", metavar="DEVICE",
                        help="run a worker on this device (auto, cpu, cuda, cuda:N); repeat for one worker per "
                             "device (default: one worker on auto)")
    group = parser.add_argument_group("limits")
    for f in fields(Limits):
        kind = float if "float" in str(f.type) else int
        group.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default, help=f.metadata["help"],
                           metavar="X" if kind is float else "N")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="how much the server logs")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        limits = Limits(**{f.name: getattr(args, f.name) for f in fields(Limits)}).check()
    except ValueError as exc:
        parser.error(str(exc))
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0..65535, got {args.port}")
    devices = args.devices or ["auto"]
    from ..config import StyleConfig
    from ..errors import ConfigError
    for device in devices:
        try:
            StyleConfig(device=device).validate()
        except ConfigError as exc:
            parser.error(str(exc))
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401  (python-multipart)
        import uvicorn
    except ImportError as exc:
        print(f"vggstyle serve: error: needs the web extra ({exc.name} is missing): pip install 'vggstyle[web]'",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        sock = _bind(args.host, args.port)
    except OSError as exc:
        print(f"vggstyle serve: error: cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
              "choose another --port", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")
    loopback = args.host in LOOPBACK_NAMES
    app = create_app(limits, devices, allowed_hosts=LOOPBACK_NAMES if loopback else None)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"vggstyle: serving on http://{shown}:{port}/ (API docs at /docs; Ctrl-C to stop)", file=sys.stderr)
    if not loopback:
        print("vggstyle: warning: listening beyond this machine: anyone who can reach it can run jobs",
              file=sys.stderr)
    uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, lifespan="on")).run(sockets=[sock])
    return 0
