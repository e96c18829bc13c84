"""The web page and its HTTP API (FastAPI; OpenAPI at /docs); `vggstyle serve` (cli/serve.py) runs it.

    POST   /api/jobs               multipart: file `content` (an image, or a video up to --max-video-seconds),
                                   file(s) `style`, StyleConfig fields -> 202 job
    GET    /api/jobs/{id}          state, queue position, step, losses, ETA (a video: frame k of n too)
    GET    /api/jobs/{id}/events   the same, as server-sent events, until the job ends
    GET    /api/jobs/{id}/preview  PNG of the image (a video: the current frame) as it is now
    GET    /api/jobs/{id}/result   PNG with the parameters in a 'vggstyle' text chunk; MP4 for a video
    GET    /api/jobs/{id}/content  a video job's first content frame (PNG)
    GET    /api/jobs/{id}/result/first-frame  the same frame of the result (PNG): before and after
    DELETE /api/jobs/{id}          cancel; idempotent (a finished job is left as it is)
    DELETE /api/jobs/{id}/result   discard a finished job and its result
    GET    /api/options            form fields with defaults and help, presets, limits
    GET    /api/status             workers and queue length

The routes are in routes.py, the refusals they document in openapi.py. Every refusal is JSON
``{"detail": "one line"}``: 400 malformed, 403 cross-origin, 404, 408 upload too slow, 409, 413 too
large, 415 not an image or a video, 422 bad image, video or parameter, 503 queue full or shutting down. FastAPI is imported by
create_app, so `import vggstyle.web.server` and `vggstyle serve --help` work without the
[web] extra; torch is imported with the first job.
"""

import contextlib
import logging
import signal
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from .uploads import Limits, UploadError

STATIC = Path(__file__).parent / "static"
SHUTDOWN_SECONDS = 3.0  # for open connections and then for the workers; the process is gone within 5 s
log = logging.getLogger("vggstyle.web")

# Security headers on every response; the page loads nothing from elsewhere and runs no inline
# script (FastAPI's /docs does both, so the policy is for our page only).
_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
_PAGE_CSP = b"default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'"
_PAGE_HEADERS = [(b"content-security-policy", _PAGE_CSP)]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def create_app(limits: Limits | None = None, devices=("auto",), *, runner=None, video_runner=None,
               allowed_hosts=None, scheduler: str | None = None):
    """The FastAPI app with its own JobQueue (``app.state.jobs``), closed when the app shuts down.

    devices: one worker thread per entry ("auto", "cpu", "cuda:0", ...); runner replaces
    vggstyle.stylize (same signature) and video_runner vggstyle.stylize_video (the keywords the
    worker passes: video, masks, on_step, on_frame), for tests and embedding; allowed_hosts: the Host header
    values to answer (`vggstyle serve` on a loopback address passes LOOPBACK_NAMES, so a web page
    elsewhere cannot reach the server by pointing its own name at 127.0.0.1: DNS rebinding);
    scheduler: a Dask scheduler each video job is spread over (its chunks are the cluster's tasks).
    """
    from fastapi import FastAPI
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool

    from .. import __version__
    from .jobs import JobQueue
    from .openapi import OPENAPI_VERSION
    from .routes import router

    limits = (limits or Limits()).check()
    jobs = JobQueue(devices, max_queued=limits.max_queue, keep_results=limits.keep_results,
                    keep_seconds=limits.keep_minutes * 60, preview_every=limits.preview_every, runner=runner,
                    video_runner=video_runner, scheduler=scheduler)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await run_in_threadpool(jobs.close, SHUTDOWN_SECONDS)

    app = FastAPI(title="vggstyle", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Neural style transfer (Gatys et al., VGG19): upload, queue, live preview. "
                              "Every refusal is JSON {\"detail\": \"one line\"}.")
    app.openapi_version = OPENAPI_VERSION
    app.state.jobs, app.state.limits = jobs, limits
    _add_error_handlers(app)
    app.include_router(router)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_offline_docs(app, StaticFiles)
    app.add_middleware(_SecurityHeaders)
    if allowed_hosts:
        app.add_middleware(_HostCheck, allowed=allowed_hosts)
    return app


def _add_error_handlers(app) -> None:
    """Every refusal as JSON {"detail": "one line"}; a bug is logged with its traceback, and the
    client gets one line too."""
    from fastapi.responses import JSONResponse

    @app.exception_handler(UploadError)
    async def refused(request, exc: UploadError):
        headers = {"Retry-After": "30"} if exc.status == 503 else None
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(Exception)
    async def internal(request, exc: Exception):
        log.error("internal error answering %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error; see the server log"}, status_code=500)


def _add_offline_docs(app, static_files) -> None:
    """Swagger UI at /docs from the swagger-ui-bundle package: FastAPI's default loads it from a
    CDN, which leaves the page blank on an offline machine. (ReDoc would need a CDN: it is off.)"""
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", static_files(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="vggstyle API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="data:,")


def host_name(host_header: str) -> str | None:
    """The name in a Host header, IPv6 brackets and port removed ('[::1]:8000' -> '::1')."""
    try:
        return urlsplit("//" + host_header).hostname
    except ValueError:
        return None


class _HostCheck:
    """Pure ASGI middleware: answer only requests whose Host names this server (DNS rebinding);
    a refusal is JSON like every other."""

    def __init__(self, app, allowed):
        self.app = app
        self.allowed = {name.lower() for name in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
        if host_name(host) in self.allowed:
            return await self.app(scope, receive, send)
        from starlette.responses import JSONResponse
        response = JSONResponse({"detail": "this server answers only to its own address (Host header refused)"},
                                status_code=400)
        await response(scope, receive, send)


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
def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host.strip("[]"), port), family=family)


def _uvicorn_server(app, log_level: str):
    """uvicorn's Server, changed in two ways for a clean stop: a signal first stops the job queue
    (the running job is cancelled, event streams end, so connections close at once instead of
    when every job is done), and the signal is recorded in ``received`` rather than re-raised
    after the shutdown (main() turns it into the exit status, with no traceback)."""
    import uvicorn

    class Server(uvicorn.Server):
        received: list[int]

        def handle_exit(self, sig, frame):
            self.received.append(sig)
            # Not jobs.stop() here: a signal handler must not take a lock its own thread may hold.
            threading.Thread(target=app.state.jobs.stop, name="vggstyle-stop").start()
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    server = Server(uvicorn.Config(app, log_level=log_level, lifespan="on",
                                   timeout_graceful_shutdown=SHUTDOWN_SECONDS))
    server.received = []
    return server


@contextlib.contextmanager
def background_server(app, host: str = "127.0.0.1", port: int = 0):
    """Serve ``app`` with uvicorn in a thread (port 0: a free one); yield its base URL; stop it on exit."""
    sock = bind(host, port)
    server = _uvicorn_server(app, "warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="vggstyle-uvicorn")
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the web server did not start; see the log above")
            time.sleep(0.02)
        bound_host, bound_port = sock.getsockname()[:2]
        yield f"http://{'[' + bound_host + ']' if ':' in bound_host else bound_host}:{bound_port}"
    finally:
        app.state.jobs.stop()
        server.should_exit = True
        thread.join(30)
        sock.close()


def serve_until_signal(app, sock, log_level: str) -> tuple[bool, bool]:
    """Run until SIGINT or SIGTERM: the running job is cancelled, the queue stops, event streams
    close, the results directory is removed, all within about 5 s. Returns (interrupted: the
    signal was SIGINT, workers_ended: no worker is still inside a step)."""
    server = _uvicorn_server(app, log_level)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C before uvicorn had taken the signal over
        server.received.append(signal.SIGINT)
    workers_ended = app.state.jobs.close(SHUTDOWN_SECONDS)  # done already unless a second Ctrl-C forced it
    return signal.SIGINT in server.received, workers_ended
