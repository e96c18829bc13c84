"""End to end in a real browser: Debian's headless Chromium driven by Playwright, against the real
server (uvicorn on a free loopback port). `make test` installs both; elsewhere the test says why
it skips."""

import io
import json
import os
import shutil
import threading
import time

import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]
EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")

pytest.importorskip("fastapi", reason="the web app needs the [web] extra (fastapi, uvicorn, python-multipart)")
pytest.importorskip("uvicorn", reason="the web app needs uvicorn (the [web] extra)")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright for Python is not installed (make test installs it)")
if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
    pytest.skip(f"Chromium is not installed at {CHROMIUM} (make test installs Debian's chromium package)",
                allow_module_level=True)

from vggstyle import StyleConfig  # noqa: E402
from vggstyle.web.server import LOOPBACK_NAMES, background_server, create_app  # noqa: E402
from vggstyle.web.uploads import Limits  # noqa: E402


def paced(content, styles, config, *, on_step, masks=None):
    """vggstyle.stylize at no more than 20 iterations a second, so that the previews a browser sees do
    not depend on how fast this machine is (a real 512 px job takes about a second an iteration)."""
    from vggstyle.web.jobs import default_runner

    def step(progress):
        time.sleep(0.05)
        return on_step(progress)

    return default_runner(content, styles, config, on_step=step, masks=masks)


def tiny(tmp_path, source, side, name):
    image = Image.open(os.path.join(EXAMPLES, source)).convert("RGB")
    image.thumbnail((side, side))
    path = tmp_path / name
    image.save(path)
    return path, image.size


def load_with_files(page, url, content, style) -> None:
    """Open the page at ``url`` and pick ``content`` and ``style`` as a user would."""
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready='1']")
    page.set_input_files("#content-file", str(content))
    page.set_input_files("#style-files", str(style))
    page.wait_for_selector("#style-list li")


def wait_until(page, expression, timeout):
    """Poll a page expression from Python. Not page.wait_for_function: when its first try is false it
    polls with eval inside the page, which the app's Content-Security-Policy (no 'unsafe-eval')
    rightly refuses; page.evaluate runs through the debugging protocol, outside the page's policy."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"the page never showed {expression} in {timeout} s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM if os.path.exists(CHROMIUM)
                                             else shutil.which("chromium"), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def test_upload_start_watch_preview_and_download(browser, tmp_path):
    content, content_size = tiny(tmp_path, "content/tubingen.jpg", 64, "tubingen.png")
    style_a, _ = tiny(tmp_path, "style/starry_night.jpg", 48, "starry.png")
    style_b, _ = tiny(tmp_path, "style/shipwreck.jpg", 48, "shipwreck.png")
    assert content_size == (64, 48)

    with background_server(create_app(Limits(preview_every=2), runner=paced, allowed_hosts=LOOPBACK_NAMES)) as url:
        page = browser.new_page(accept_downloads=True)
        page.set_default_timeout(120_000)  # generous: the CPU may be shared
        console_errors = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        previews = []
        page.on("response", lambda r: previews.append(r) if "/preview?v=" in r.url else None)

        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']")
        assert page.is_disabled("#start"), "nothing to start without images"
        # The form comes from StyleConfig through /api/options.
        assert float(page.input_value("#f-style_weight")) == StyleConfig().style_weight

        page.set_input_files("#content-file", str(content))
        page.set_input_files("#style-files", [str(style_a), str(style_b)])
        page.wait_for_selector("#content-thumb img")  # each pick is decoded first, then shown
        page.wait_for_selector("#style-list li:nth-child(2) input.blend")
        sliders = page.locator("#style-list input.blend")
        assert sliders.count() == 2, "several styles get blend sliders"
        sliders.nth(1).evaluate("e => { e.value = '8'; e.dispatchEvent(new Event('input')); }")

        assert "fast 256 px, 100 iterations" in page.inner_text("#presets"), "a preset says what it sets"
        page.check("#preset-fast")
        assert page.input_value("#f-image_size") == "256"
        page.fill("#f-image_size", "48")
        page.fill("#f-num_iterations", "20")
        page.click("#start")

        page.wait_for_selector("#run:not([hidden])")
        never_broken = "(p => p.hidden || (p.complete && p.naturalWidth > 0))(document.getElementById('preview'))"
        assert page.evaluate(never_broken), "no broken-image icon before the first preview"
        assert page.is_hidden("#setup") and page.is_visible("#cancel")
        assert page.is_hidden("#download") and page.is_hidden("#again"), "no result to offer yet"
        page.wait_for_selector("#download:not([hidden])")
        assert page.is_hidden("#cancel") and page.is_visible("#again")
        status = page.inner_text("#status")
        assert status.startswith("Done: 20 iterations"), status
        assert page.evaluate("document.getElementById('bar').value") == 1
        assert "loss" in page.inner_text("#losses")

        # The preview changed at least twice while the job ran: distinct images, each shown.
        intermediate = [r for r in previews if "v=final" not in r.url and r.status == 200]
        bodies = {r.body() for r in intermediate}
        assert len(bodies) >= 2, f"{len(intermediate)} previews fetched, {len(bodies)} distinct"
        for body in bodies:
            assert Image.open(io.BytesIO(body)).size == (48, 36)
        assert int(page.get_attribute("#preview", "data-loads")) >= 3  # two previews and the result

        with page.expect_download() as download_info:
            page.click("#download")
        download = download_info.value
        assert download.suggested_filename == "vggstyle-48x36.png", "the name the page gives it"
        saved = tmp_path / "result.png"
        download.save_as(saved)
        with Image.open(saved) as result:
            assert result.format == "PNG"
            assert result.size == (48, 36), "image_size is the long side; the content's aspect is kept"
            parameters = json.loads(result.info["vggstyle"])
        assert parameters["iterations_done"] == 20 and parameters["image_size"] == 48
        assert parameters["style_blend_weights"] == [5.0, 8.0], "the sliders set the blend"

        page.click("#again")
        page.wait_for_selector("#setup:not([hidden])")
        assert page.is_enabled("#start"), "the images stay chosen for another go"
        assert console_errors == []
        page.close()


def test_style_masks_one_per_style_or_none(browser, tmp_path):
    content, _ = tiny(tmp_path, "content/tubingen.jpg", 64, "tubingen.png")
    style_a, _ = tiny(tmp_path, "style/starry_night.jpg", 48, "starry.png")
    style_b, _ = tiny(tmp_path, "style/shipwreck.jpg", 48, "shipwreck.png")
    sky = tmp_path / "sky.png"
    ground = tmp_path / "ground.png"
    Image.open(os.path.join(EXAMPLES, "masks/tubingen_sky.png")).resize((64, 48)).save(sky)
    Image.open(os.path.join(EXAMPLES, "masks/tubingen_ground.png")).resize((64, 48)).save(ground)

    received = []

    def recording(content, styles, config, *, on_step, masks=None):
        received.append(masks)
        return paced(content, styles, config, on_step=on_step, masks=masks)

    with background_server(create_app(Limits(), runner=recording, allowed_hosts=LOOPBACK_NAMES)) as url:
        page = browser.new_page()
        page.set_default_timeout(120_000)
        sent = []
        page.on("request", lambda r: sent.append(r) if r.url.endswith("/api/jobs") else None)
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']")
        page.set_input_files("#content-file", str(content))
        page.set_input_files("#style-files", [str(style_a), str(style_b)])
        page.wait_for_selector("#content-thumb img")
        page.wait_for_selector("#style-list li:nth-child(2)")
        page.set_input_files("#mask-file-0", str(sky))
        page.wait_for_selector("#style-list li:nth-child(1) >> text=mask: sky.png")
        page.fill("#f-image_size", "48")
        page.fill("#f-num_iterations", "4")
        page.click("#start")
        assert "every style image a mask, or none" in page.inner_text("#form-error")
        assert sent == [] and page.is_hidden("#run"), "nothing is sent with a mask missing"

        page.set_input_files("#mask-file-1", str(ground))
        page.wait_for_selector("#style-list li:nth-child(2) >> text=mask: ground.png")
        page.click("#start")
        page.wait_for_selector("#download:not([hidden])")
        assert page.inner_text("#status").startswith("Done: 4 iterations")
        [masks] = received
        assert len(masks) == 2 and masks[0].size == masks[1].size == (48, 36)
        # In the styles' order: the sky mask (white at the top) goes with the first style.
        assert masks[0].getpixel((24, 2)) > 200 and masks[1].getpixel((24, 2)) < 50
        page.close()


def test_api_docs_render_their_operations_offline(browser):
    with background_server(create_app(Limits(), runner=paced, allowed_hosts=LOOPBACK_NAMES)) as url:
        page = browser.new_page()
        outside = []
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((url, "data:")) else None)
        page.goto(url + "/docs")
        page.wait_for_selector(".opblock", timeout=30_000)
        assert page.locator(".opblock").count() >= 8, "every operation is rendered"
        assert "Unable to render" not in page.inner_text("body")
        assert outside == [], "nothing is loaded from elsewhere"
        page.close()
        import urllib.request
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url + "/redoc")
        assert info.value.code == 404, "ReDoc would need a CDN: it is off"


def test_page_help_choices_and_non_images_said_at_once(browser, tmp_path):
    content, _ = tiny(tmp_path, "content/tubingen.jpg", 64, "tubingen.png")
    fake = tmp_path / "notes.jpg"
    fake.write_text("not an image at all")
    with background_server(create_app(Limits(), runner=paced, allowed_hosts=LOOPBACK_NAMES)) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']")
        page.click("details summary")  # open "More options"
        helps = page.locator(".field small").evaluate_all("els => els.map(e => e.textContent)")
        assert len(helps) > 20 and not [h for h in helps if "--" in h], "help is written for the page, not the CLI"
        assert page.locator("#f-init option").evaluate_all("els => els.map(e => e.value)") == ["content", "random"]
        assert "image path" not in page.inner_text("#f-init >> xpath=..")
        layers = page.locator("#f-style_layers")
        assert layers.evaluate("e => e.scrollWidth <= e.clientWidth"), "the layer box shows its whole default"
        page.set_input_files("#style-files", str(fake))
        page.wait_for_selector("#form-error >> text=Not an image")
        assert "Not an image this page can read: notes.jpg" in page.inner_text("#form-error")
        assert page.locator("#style-list li").count() == 0, "not added"
        page.set_input_files("#content-file", str(content))
        page.wait_for_selector("#content-thumb img")  # checked, then shown
        page.close()


def test_the_page_recovers_when_its_job_disappears(browser, tmp_path):
    content, _ = tiny(tmp_path, "content/tubingen.jpg", 64, "tubingen.png")
    style, _ = tiny(tmp_path, "style/starry_night.jpg", 48, "starry.png")
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    page = browser.new_page()
    page.set_default_timeout(60_000)
    with background_server(create_app(Limits(), runner=paced, allowed_hosts=LOOPBACK_NAMES), port=port) as url:
        load_with_files(page, url, content, style)
        page.wait_for_selector("#content-thumb img")
        page.fill("#f-image_size", "48")
        page.fill("#f-num_iterations", "2000")
        page.fill("#f-content_weight", "3")
        page.click("#start")
        page.wait_for_selector("#status >> text=/Iteration \\d+ of 2000/")
    # The server restarted: the job is gone.
    runs = []

    def recording(content, styles, config, *, on_step, masks=None):
        runs.append(config)
        return paced(content, styles, config, on_step=on_step, masks=masks)

    with background_server(create_app(Limits(), runner=recording, allowed_hosts=LOOPBACK_NAMES), port=port):
        page.wait_for_selector("#rerun:not([hidden])")
        # Either the old server's last word reached the page (it stopped the job as it shut down) or
        # the stream was cut first and the new server has never heard of the job: both say so.
        said = (page.inner_text("#status"), page.inner_text("#run-error"))
        assert said[0] in ("The job was lost", "Stopped by the server"), said
        assert "no longer has this job" in said[1] or "shutting down" in said[1], said
        assert page.is_hidden("#cancel") and page.is_visible("#again")
        page.click("#rerun")
        page.wait_for_selector("#status >> text=/Iteration \\d+ of 2000/")
        assert runs[0].content_weight == 3.0 and runs[0].image_size == 48, "the same settings"
        page.click("#cancel")
        page.wait_for_selector("#compare:not([hidden])")
        figures = page.locator("#compare figcaption").all_inner_texts()
        assert figures == ["content", "style", "result"], "before and after, side by side"
        page.close()


def test_a_video_content_shows_frames_and_plays_the_mp4_result(browser, tmp_path):
    pytest.importorskip("av", reason="video needs PyAV")
    from conftest import FakeVideoRunner as FakeRunner  # stylize_video's hooks, no network
    from odd_media import clip_bytes  # a clip made with PyAV

    clip = tmp_path / "walk.mp4"
    clip.write_bytes(clip_bytes(tmp_path, frames=6, name="source.mp4"))
    style, _ = tiny(tmp_path, "style/starry_night.jpg", 48, "starry.png")
    runner = FakeRunner(steps=5, pace=0.03, passes=2)
    app = create_app(Limits(preview_every=2), video_runner=runner, allowed_hosts=LOOPBACK_NAMES)
    with background_server(app) as url:
        page = browser.new_page(accept_downloads=True)
        page.set_default_timeout(60_000)
        console_errors = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']")
        assert "10 s at most" in page.inner_text("#content-drop")
        page.set_input_files("#content-file", str(clip))
        page.set_input_files("#style-files", str(style))
        page.wait_for_selector("#content-thumb >> text=walk.mp4")
        page.wait_for_selector("#style-list li")
        page.fill("#f-image_size", "48")
        page.click("#start")
        page.wait_for_selector("#status >> text=/Pass 1 of 2: frame \\d of 6, iteration \\d of 5/")
        page.wait_for_selector("#status >> text=/Pass 2 of 2: frame \\d of 6, iteration \\d of 5/")
        page.wait_for_selector("#result-video:not([hidden])")
        assert page.inner_text("#status").startswith("Done: 6 frames")
        assert page.is_hidden("#preview")
        wait_until(page, "document.getElementById('result-video').readyState >= 1", timeout=20)
        assert page.evaluate("[document.getElementById('result-video').videoWidth, "
                             "document.getElementById('result-video').error]") == [48, None], "it plays"
        assert int(page.get_attribute("#preview", "data-loads")) >= 2, "the frames were previewed as they formed"
        figures = page.locator("#compare figcaption").all_inner_texts()
        assert figures == ["content (first frame)", "style", "result (first frame)"], "the same frame, before and after"
        wait_until(page, "[...document.querySelectorAll('#compare img')].every(i => i.naturalWidth === 48)", timeout=60)
        assert "+ temporal 0.500" in page.inner_text("#losses"), "every term of a video's loss"
        assert page.inner_text("#download") == "Download MP4"
        with page.expect_download() as download_info:
            page.click("#download")
        assert download_info.value.suggested_filename == "vggstyle-48x36.mp4"
        # the content weight and the iterations shown (an image's) were left as they were: the
        # video's own apply (1, and 300 for a first frame), not the image's the form shows
        config = runner.calls[0]["config"]
        assert page.input_value("#f-content_weight") == "1.25" and page.input_value("#f-num_iterations") == "250"
        assert config.content_weight is None and config.num_iterations is None and config.image_size == 48
        assert console_errors == []
        page.close()


def test_a_video_spread_over_a_cluster_says_its_chunk_passes(browser, tmp_path):
    """Issue #21: `vggstyle serve --scheduler`: the page counts chunk passes, not frames, and its bar
    follows them; then the result plays as any video's."""
    pytest.importorskip("av", reason="video needs PyAV")
    from conftest import FakeSpreadRunner  # stylize_video spread over a cluster, as the server sees it
    from odd_media import clip_bytes

    clip = tmp_path / "walk.mp4"
    clip.write_bytes(clip_bytes(tmp_path, frames=6, name="source.mp4"))
    style, _ = tiny(tmp_path, "style/starry_night.jpg", 48, "starry.png")
    runner = FakeSpreadRunner(hold_after=2)
    app = create_app(Limits(), video_runner=runner, allowed_hosts=LOOPBACK_NAMES, scheduler="tcp://127.0.0.1:8786")
    with background_server(app) as url:
        page = browser.new_page()
        page.set_default_timeout(60_000)
        load_with_files(page, url, clip, style)
        page.click("#start")
        assert runner.held.wait(30)
        page.wait_for_selector("#status >> text=/Spread over the cluster: 1 of 4 chunk passes done \\(2 chunks, 2 "
                               "running\\) · about \\d+ s left/")
        assert page.evaluate("document.getElementById('bar').value") == pytest.approx(0.25, abs=0.01)
        runner.release.set()
        page.wait_for_selector("#result-video:not([hidden])")
        assert page.inner_text("#status").startswith("Done: 6 frames")
        page.close()


def test_tiff_is_taken_and_a_text_file_named_mp4_is_not(browser, tmp_path):
    """Before: a TIFF (which the server reads) was refused when picked, and a text file named .mp4
    was shown as a video and refused only at Start."""
    tiff = tmp_path / "scan.tif"
    Image.open(os.path.join(EXAMPLES, "content/tubingen.jpg")).convert("RGB").resize((64, 48)).save(tiff)
    fake = tmp_path / "holiday.mp4"
    fake.write_text("not a video, whatever its name says")
    style, _ = tiny(tmp_path, "style/starry_night.jpg", 48, "starry.png")
    with background_server(create_app(Limits(), runner=paced, allowed_hosts=LOOPBACK_NAMES)) as url:
        page = browser.new_page()
        page.set_default_timeout(120_000)
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']")
        page.set_input_files("#content-file", str(fake))
        page.wait_for_selector("#form-error >> text=Not an image")
        assert "holiday.mp4" in page.inner_text("#form-error") and page.inner_text("#content-thumb") == ""
        page.set_input_files("#content-file", str(tiff))
        page.wait_for_selector("#content-thumb >> text=scan.tif")
        assert page.inner_text("#form-error") == ""
        page.set_input_files("#style-files", str(style))
        page.wait_for_selector("#style-list li")
        page.fill("#f-image_size", "48")
        page.fill("#f-num_iterations", "3")
        page.click("#start")
        page.wait_for_selector("#download:not([hidden])")
        assert page.inner_text("#status").startswith("Done: 3 iterations")
        page.close()


def test_a_server_stopping_mid_job_is_said_as_such(browser, tmp_path):
    """Before: the event stream ended before the job's last state, and the page said "Reconnecting
    to the server..." instead of its own "Stopped by the server"."""
    content, _ = tiny(tmp_path, "content/tubingen.jpg", 64, "tubingen.png")
    style, _ = tiny(tmp_path, "style/starry_night.jpg", 48, "starry.png")
    started = threading.Event()

    def slow(content, styles, config, *, on_step, masks=None):  # iterations far longer than the stop's wait
        def step(progress):
            started.set()
            time.sleep(4)
            return on_step(progress)
        return paced(content, styles, config, on_step=step, masks=masks)

    page = browser.new_page()
    page.set_default_timeout(60_000)
    with background_server(create_app(Limits(), runner=slow, allowed_hosts=LOOPBACK_NAMES)) as url:
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']")
        page.set_input_files("#content-file", str(content))
        page.set_input_files("#style-files", str(style))
        page.wait_for_selector("#style-list li")
        page.fill("#f-image_size", "48")
        page.click("#start")
        assert started.wait(60)
        page.wait_for_selector("#status >> text=/Iteration 1 of/")
    page.wait_for_selector("#status >> text=Stopped by the server", timeout=10_000)
    assert "shutting down" in page.inner_text("#run-error") and page.is_visible("#rerun")
    page.close()
