"""The HTTP API's routes, on one APIRouter: each handler is a few lines over the job queue
(``request.app.state.jobs``), the limits (``.limits``) and uploads.py."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .body import ClientGone, read_form, split_form
from ..files import png_bytes
from .jobs import FINISHED, STOPPED_BY_SHUTDOWN, QueueFull
from .openapi import REFUSALS, job_request_schema
from .limits import shutting_down
from .uploads import (VIDEO_FORMATS, UploadError, config_from_form, decode_upload, options, prepare_images,
                      upload_label, video_config_from_form)
from .video_jobs import VideoJob
from .video_uploads import is_video, save_video_upload

log = logging.getLogger("vggstyle.web")
router = APIRouter()
# One job's images are decoded at a time, whatever arrives concurrently, and always on the same
# thread: what decoding holds in memory is bounded by one job's pixels, not by the number of
# clients. (On a pool's threads each decode also left its memory in that thread's malloc arena:
# 14 decodes of 19 MB uploads kept ~800 MB resident.)
DECODER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vggstyle-decode")
KEEP_ALIVE_SECONDS = 15.0
STREAM_POLL_SECONDS = 0.1
STOPPING_WAIT_SECONDS = 2.0  # within server.SHUTDOWN_SECONDS, after which open connections are cut


def _job_or_404(request: Request, job_id: str):
    job = request.app.state.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, "no such job (finished results are kept for a limited time)")
    return job


def _check_origin(request: Request) -> None:
    # A web page elsewhere must not spend this machine's time: browsers send Origin on
    # cross-site POST/DELETE, programs usually send none.
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise HTTPException(403, "cross-origin request refused: use the page this server serves")


async def _read_job(request: Request):
    """The upload's config (checked before any image is decoded), its file parts (spooled to disk,
    read in the decode slot) and the form, which the caller closes."""
    limits, jobs = request.app.state.limits, request.app.state.jobs
    form = await read_form(request, limits, lambda: jobs.closing)
    try:
        content, styles, masks, values = split_form(form, limits)
        config = config_from_form(values, len(styles), limits)
        video = video_config_from_form(values, limits)
    except BaseException:
        await form.close()
        raise
    files = [(f.file, "content image" if i == 0 else f"style image {i}", f.filename)
             for i, f in enumerate([content, *styles])]
    mask_files = [(f.file, f"style mask {i}", f.filename) for i, f in enumerate(masks, 1)]
    return form, config, video, files, mask_files


def _bytes_of(file) -> bytes:
    file.seek(0)
    return file.read()


def _decode_job(jobs, limits, config, video, files, mask_files) -> dict:
    """On the decoder thread, one job at a time: read the spooled files, decode, check and shrink the
    images; a video content is written to the queue's directory and checked frame by frame.
    Returns JobQueue.submit's arguments. Only the job being decoded holds its bytes in memory."""
    if jobs.closing:
        raise shutting_down()
    (file, what, name), upload = files[0], None
    data = _bytes_of(file)
    if is_video(data):
        upload = save_video_upload(data, upload_label("content video", name), limits, jobs.directory)
        first = upload.first_frame
    else:
        first = _decode_content(data, what, name, limits)
    del data
    try:
        styles = [decode_upload(_bytes_of(f), what, name, limits) for f, what, name in files[1:]]
        masks = [decode_upload(_bytes_of(f), what, name, limits) for f, what, name in mask_files]
        content, styles, masks, size = prepare_images(config, first, styles, masks)
    except BaseException:
        if upload is not None:
            upload.path.unlink(missing_ok=True)
        raise
    job = {"content": content, "styles": styles, "masks": masks, "size": size}
    if upload is None:
        return job
    return {**job, "content": None, "job_type": VideoJob, "input_path": upload.path, "video": video,
            "frames": upload.frames, "fps": upload.fps, "first_frame": png_bytes(content, compress_level=1)}


def _decode_content(data: bytes, what: str, name, limits):
    try:
        return decode_upload(data, what, name, limits)
    except UploadError as exc:
        if exc.status == 415:  # say that a video would do too
            raise UploadError(415, f"{exc}; or send a video ({VIDEO_FORMATS})") from None
        raise


@router.post("/api/jobs", status_code=202, summary="Start a stylization job (the content: an image or a short video)", openapi_extra=job_request_schema(),
             responses=REFUSALS)
async def submit(request: Request):
    _check_origin(request)
    jobs, limits = request.app.state.jobs, request.app.state.limits
    try:
        with jobs.seat() as seat:  # before the upload is read: a full queue reads no bodies
            try:
                form, config, video, files, mask_files = await _read_job(request)
            except ClientGone:
                log.info("an upload was abandoned by its client before it was complete")
                return Response(status_code=400)  # nobody reads it
            try:
                prepared = await asyncio.wrap_future(DECODER.submit(_decode_job, jobs, limits, config, video, files,
                                                                    mask_files))
            finally:
                await form.close()
            try:
                job = jobs.submit(config, seat=seat, **prepared)
            except QueueFull:
                if prepared.get("input_path") is not None:
                    prepared["input_path"].unlink(missing_ok=True)
                raise
    except QueueFull as exc:
        raise UploadError(503, str(exc)) from None
    return JSONResponse(jobs.describe(job), status_code=202, headers={"Location": f"/api/jobs/{job.id}"})


@router.get("/api/jobs/{job_id}", summary="State, queue position, progress, losses and ETA of a job",
            responses=REFUSALS.subset(404))
async def job_state(job_id: str, request: Request):
    return request.app.state.jobs.describe(_job_or_404(request, job_id))


@router.delete("/api/jobs/{job_id}", summary="Cancel a job (idempotent: a finished job is left as it is)",
               responses=REFUSALS.subset(403, 404))
async def cancel(job_id: str, request: Request):
    _check_origin(request)
    job = request.app.state.jobs.cancel(job_id)
    if job is None:
        raise HTTPException(404, "no such job")
    return request.app.state.jobs.describe(job)


@router.delete("/api/jobs/{job_id}/result", summary="Discard a finished job and its result",
               responses=REFUSALS.subset(403, 404, 409))
async def discard(job_id: str, request: Request):
    _check_origin(request)
    job = request.app.state.jobs.discard(job_id)
    if job is None:
        raise HTTPException(404, "no such job")
    if job.state not in FINISHED:
        raise HTTPException(409, f"the job is {job.state}; cancel it first")
    return {"detail": "discarded"}


async def _job_events(request: Request, job):
    """Snapshots as server-sent events when the job changes, until it ends. When the server stops,
    the stream waits a little for the job to end (a running one stops after its iteration) so that
    the page reads its last state rather than a broken connection; a job still running then ends
    the stream with one ``stopping`` event."""
    jobs = request.app.state.jobs
    seen, idle, stopping_since = -1, 0.0, None
    while True:
        if job.version != seen:
            seen = job.version
            snapshot = jobs.describe(job)
            yield f"data: {json.dumps(snapshot)}\n\n"
            if snapshot["state"] in FINISHED:
                return
            idle = 0.0
        elif idle >= KEEP_ALIVE_SECONDS:
            yield ": keep-alive\n\n"
            idle = 0.0
        if await request.is_disconnected():
            return
        if jobs.closing:
            stopping_since = stopping_since if stopping_since is not None else time.monotonic()
            if time.monotonic() - stopping_since > STOPPING_WAIT_SECONDS:
                yield f"event: stopping\ndata: {json.dumps({**jobs.describe(job), 'error': STOPPED_BY_SHUTDOWN})}\n\n"
                return
        await asyncio.sleep(STREAM_POLL_SECONDS)
        idle += STREAM_POLL_SECONDS


@router.get("/api/jobs/{job_id}/events", summary="Progress as server-sent events until the job ends",
            responses=REFUSALS.subset(404))
async def events(job_id: str, request: Request):
    job = _job_or_404(request, job_id)
    return StreamingResponse(_job_events(request, job), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _result_bytes(job) -> bytes | None:
    path = job.result_path
    if path is None:
        return None
    try:
        return await run_in_threadpool(path.read_bytes)
    except FileNotFoundError:  # discarded a moment ago
        return None


PNG = {200: {"content": {"image/png": {}}}}
PNG_OR_MP4 = {200: {"description": "PNG for an image content (its parameters in a 'vggstyle' text chunk), "
                                   "MP4 (H.264) for a video content",
                    "content": {"image/png": {}, "video/mp4": {}}}}


@router.get("/api/jobs/{job_id}/preview", summary="The image as it is now (PNG); for a video, the current frame",
            response_class=Response, responses={**PNG, **REFUSALS.subset(404)})
async def preview(job_id: str, request: Request):
    job = _job_or_404(request, job_id)
    data = job.preview or job.poster or (await _result_bytes(job) if job.kind == "image" else None)
    if data is None:
        raise HTTPException(404, "no preview yet: the job has not started its first iteration")
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/api/jobs/{job_id}/result", summary="The result: PNG with its parameters, or MP4 for a video "
            "(a cancelled video: the frames done)", response_class=Response,
            responses={**PNG_OR_MP4, **REFUSALS.subset(404, 409)})
async def result(job_id: str, request: Request):
    job = _job_or_404(request, job_id)
    if job.state not in FINISHED:
        raise HTTPException(409, f"the job is {job.state}; the result is ready when it is done")
    data = await _result_bytes(job)
    if data is None:
        raise HTTPException(409 if job.state == "failed" else 404,
                            f"no result: {job.error}" if job.error else "no result for this job")
    return Response(data, media_type=job.media_type, headers={
        # The name the page gives its download link (a browser prefers this header's to the link's).
        "Content-Disposition": f'attachment; filename="vggstyle-{job.size[0]}x{job.size[1]}{job.suffix}"',
        "Cache-Control": "no-store"})


@router.get("/api/jobs/{job_id}/content", summary="A video job's first content frame at the job's size (PNG)",
            response_class=Response, responses={**PNG, **REFUSALS.subset(404)})
async def first_frame(job_id: str, request: Request):
    return _video_frame(request, job_id, "first_frame", "only a video job has a content frame to show")


@router.get("/api/jobs/{job_id}/result/first-frame", summary="A video job's first result frame (PNG): "
            "/content's frame, stylized, for before and after", response_class=Response,
            responses={**PNG, **REFUSALS.subset(404)})
async def first_result_frame(job_id: str, request: Request):
    return _video_frame(request, job_id, "first_result",
                        "no first result frame: not a video job, or its first frame is not done yet")


def _video_frame(request: Request, job_id: str, name: str, missing: str) -> Response:
    """A PNG a video job holds (its first content frame, its first result frame), or 404."""
    data = getattr(_job_or_404(request, job_id), name, None)
    if data is None:
        raise HTTPException(404, missing)
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/api/options", summary="Form fields (from StyleConfig's option specs), presets and this server's limits")
async def get_options(request: Request):
    return options(request.app.state.limits)


@router.get("/api/status", summary="Workers and queue length")
async def status(request: Request):
    return request.app.state.jobs.stats()
