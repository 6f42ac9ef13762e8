"""The web demo: the HTTP endpoint's answers (same loader and limits as the CLI) and a real browser run."""

from __future__ import annotations

import importlib.util
import io
import os
import struct
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from conftest import save_tiny_model

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gradio = pytest.importorskip("gradio", reason="the demo extra (pip install 'turbosr[demo]') is not installed")

ROOT = Path(__file__).resolve().parents[1]


def png_bomb(width: int, height: int) -> bytes:
    """A valid 8-bit grey PNG of width x height zero pixels: tiny on disk, huge when decoded."""
    rows = zlib.compress(b"".join(b"\0" + bytes(width) for _ in range(height)), 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny-x4")


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    from fastapi.testclient import TestClient

    from turbosr.demo import build_app

    return TestClient(build_app({"tiny": tiny_model_dir}))


def _png(size=(40, 28)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 140, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def test_endpoint_upscales_with_the_checked_options(client):
    response = client.post("/api/upscale", files={"image": ("a.png", _png(), "image/png")},
                           data={"steps": "2", "seed": "3", "color_fix": "wavelet", "tile": "256"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (160, 112)
    assert float(response.headers["x-seconds"]) > 0


def test_a_request_without_fidelity_runs_at_the_models_default(tmp_path):
    import torch
    from fastapi.testclient import TestClient

    from turbosr.demo import build_app
    from turbosr.pipeline import SRPipeline

    tiny = SRPipeline.from_pretrained(save_tiny_model(tmp_path / "tiny"))
    autoencoder = tiny.autoencoder.with_decoder({"kind": "conv", "channels": [8], "blocks": [1], "head_channels": [],
                                                 "cfw_channels": [8]})
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every weight non-zero, so w changes the output
        for parameter in autoencoder.decoder.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    tiny.replace(autoencoder=autoencoder, default_fidelity=1.0).save_pretrained(tmp_path / "cfw")
    client = TestClient(build_app({"cfw": tmp_path / "cfw"}))

    def post(**fields: str) -> bytes:
        response = client.post("/api/upscale", files={"image": ("a.png", _png(), "image/png")}, data=fields)
        assert response.status_code == 200
        return response.content

    left_out = post()
    assert left_out == post(fidelity="1") and left_out != post(fidelity="0")


@pytest.mark.parametrize(("upload", "fields", "status", "message"), [
    ("bomb", {}, 413, "14000x14000 pixels"),  # a 190 KB PNG, refused from its header before decoding
    ("junk", {}, 415, "not a supported image format"),
    ("png", {"steps": "99"}, 422, "steps must be between 1 and 50"),
    ("png", {"tile": "300"}, 422, "tile must be one of"),
    ("png", {"steps": "many"}, 422, "whole numbers"),
    ("png", {"model": "nope"}, 422, "unknown model"),
])
def test_bad_requests_get_a_one_line_message_and_a_4xx(client, upload, fields, status, message):
    data = {"bomb": png_bomb(14000, 14000), "junk": b"this is not an image", "png": _png()}[upload]
    if upload == "bomb":
        assert len(data) < 200_000
    response = client.post("/api/upscale", files={"image": ("x.png", data, "image/png")}, data=fields)
    assert response.status_code == status
    error = response.json()["error"]
    assert message in error and "\n" not in error and "Traceback" not in error


def _components(demo, kind: str) -> dict:
    return {b.label: b for b in demo.blocks.values() if type(b).__name__ == kind}


def test_build_demo_offers_each_model_s_own_step_counts_without_launching(tiny_model_dir):
    """The page is built, not served; its step slider follows the first model: a built-in (trained for one
    step) shows its one step fixed, a model without limits offers 1 to the page's maximum."""
    from turbosr import builtin_model_dir
    from turbosr.demo import MAX_STEPS, build_demo

    demo = build_demo({"x4": builtin_model_dir(4), "tiny": tiny_model_dir})
    assert isinstance(demo, gradio.Blocks) and not demo.is_running
    steps = next(s for label, s in _components(demo, "Slider").items() if label.startswith("steps"))
    assert steps.value == 1 and steps.interactive is False
    assert _components(demo, "Dropdown")["model"].choices[0][1] == "x4"
    open_ended = next(s for label, s in _components(build_demo({"tiny": tiny_model_dir}), "Slider").items()
                      if label.startswith("steps"))
    assert open_ended.maximum == MAX_STEPS and open_ended.interactive is not False


def _browser_or_skip():
    from turbosr import demo, demo_browser

    if importlib.util.find_spec("selenium") is None:
        pytest.skip("selenium is not installed (pip install 'turbosr[test]')")
    found = demo.find_browser()
    if found is None:
        pytest.skip("no system Chromium + chromedriver (apt-get install chromium chromium-driver; .ci/run does)")
    return demo, demo_browser, found


@pytest.mark.slow  # drives a real browser: CI runs it (scripts/test.sh)
def test_real_browser_upload_run_slider_and_readable_errors(tiny_model_dir, tmp_path):
    """Headless Chromium: upload a photo, click Upscale, the slider shows two images 4x the input's size;
    a file that is not an image gives a readable one-line message, not a traceback; nothing is fetched from
    outside the demo's own address."""
    demo, browser_helpers, (browser, driver_path) = _browser_or_skip()
    from turbosr.corpus import sample_path
    from turbosr.demo import build_app

    url, server = demo.serve(build_app({"tiny": tiny_model_dir}))
    driver = browser_helpers.chromium(browser, driver_path)
    try:
        result = browser_helpers.upscale_in_browser(driver, url, sample_path("chelsea"))
        assert "error" not in result, result
        width, height = Image.open(sample_path("chelsea")).size
        assert result["sizes"] == [[4 * width, 4 * height]] * 2
        assert f"{4 * width}x{4 * height}" in result["info"]
        bad = tmp_path / "broken.png"
        bad.write_bytes(b"not an image at all")
        failed = browser_helpers.upscale_in_browser(driver, url, bad)
        assert "error" in failed and "not a supported image format" in failed["error"], failed
        assert "Traceback" not in failed["error"]
        outside = [u for u in browser_helpers.requested_urls(driver) if not u.startswith((url, "data:", "blob:"))]
        assert outside == []
    finally:
        driver.quit()
        server.should_exit = True


def _serve(app):
    from turbosr.demo import serve

    return serve(app)


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float = 60) -> tuple[int, dict, bytes]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url + "api/upscale", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def _multipart(data: bytes, name: str = "a.png") -> tuple[bytes, dict[str, str]]:
    boundary = "turbosrtestboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_the_page_answers_while_a_job_runs_and_a_full_queue_says_when_to_retry(tiny_model_dir, monkeypatch):
    """The model runs in a worker thread: while one API job is held, the page itself is served, further API
    requests queue up to MAX_WAITING and the next one gets 503 with Retry-After; every file is gone after."""
    import threading
    import urllib.request

    from turbosr import demo as demo_module

    release, started = threading.Event(), threading.Event()
    real = demo_module.upscale_upload

    def held(*args, **kwargs):
        started.set()
        assert release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(demo_module, "upscale_upload", held)
    monkeypatch.setattr(demo_module, "MAX_WAITING", 2)
    app = demo_module.build_app({"tiny": tiny_model_dir})
    work, jobs = app.state.work_dir, app.state.jobs
    url, server = _serve(app)
    try:
        body, headers = _multipart(_png())
        answers: list[tuple[int, dict, bytes]] = []
        threads = [threading.Thread(target=lambda: answers.append(_post(url, body, headers))) for _ in range(3)]
        threads[0].start()
        assert started.wait(30)
        with urllib.request.urlopen(url, timeout=30) as page:  # answered while the job is held
            assert page.status == 200 and b"turbosr" in page.read()
        for thread in threads[1:]:
            thread.start()
        deadline = time.monotonic() + 30
        while jobs.waiting < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        status, reply_headers, _ = _post(url, body, headers)  # the queue holds 2 waiting: this one is refused
        assert status == 503 and int(reply_headers["retry-after"]) >= 1
        assert not release.is_set() and len(answers) == 0  # all of this while the first job was still held
        release.set()
        for thread in threads:
            thread.join(60)
        assert sorted(a[0] for a in answers) == [200, 200, 200]
        assert sorted(a[1]["x-queue-position"] for a in answers) == ["0", "1", "2"]
        time.sleep(0.5)  # background deletions run after each response is sent
        assert not [p for p in work.iterdir()]  # no result or upload left behind
    finally:
        release.set()
        server.should_exit = True


def test_requests_arriving_together_get_distinct_places_and_the_bound_holds():
    """Places are taken on arrival, before the upload is read: two requests that arrive before either reaches
    the model get positions 1 and 2 behind a running job (not both 1), a third beyond ``max_waiting`` is
    refused, and a request that gives up (``leave``) or finishes frees its place."""
    import asyncio
    import threading

    from turbosr.demo import JobQueue

    async def scenario() -> tuple[list[int | None], list[int | None], int]:
        jobs = JobQueue(max_waiting=2)
        assert jobs.admit() == 0  # runs at once
        release = threading.Event()
        running = asyncio.create_task(jobs.run(lambda: release.wait(10)))
        while not jobs.lock.locked():
            await asyncio.sleep(0)
        arrivals = [jobs.admit(), jobs.admit(), jobs.admit()]  # no await between: arriving together
        jobs.leave()  # the second one's upload was bad: its place is free again
        after_leave = [jobs.admit(), jobs.admit()]
        release.set()
        await running
        return arrivals, after_leave, jobs.waiting

    arrivals, after_leave, waiting = asyncio.run(scenario())
    assert arrivals == [1, 2, None]
    assert after_leave == [2, None]
    assert waiting == 2  # the two admitted requests still owe run() or leave()


@pytest.mark.slow  # a second interpreter or a burst of requests: CI runs it (scripts/test.sh)
def test_the_bounded_load_test_gets_an_answer_for_every_request_and_leaves_no_file(tiny_model_dir, tmp_path):
    """benchmarks/demo_load.py against a real `turbosr demo` process: a large job and 12 small ones at once, the
    page loaded throughout. Every request is answered with 200 or 503 (never another 5xx), no page load fails,
    and no file is left in the server's temporary folder after Ctrl-C. (The times it reports are not asserted.)"""
    import json

    from conftest import load_script

    module = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "demo_load.py")
    out = tmp_path / "load"
    code = module.main(["--model", str(tiny_model_dir), "--big", "96", "--small", "24", "--requests", "12",
                        "--page-every", "0.2", "--timeout", "240", "--out", str(out)])
    row = json.loads(out.with_suffix(".json").read_text())["rows"][0]
    answered = sum(sum(codes.values()) for codes in row["statuses"].values())
    assert code == 0 and row["server_errors"] == 0 and row["unanswered"] == 0 and answered == 13
    assert {code for codes in row["statuses"].values() for code in codes} <= {"200", "503"}
    assert row["statuses"]["large"] == {"200": 1}
    assert row["page_failures"] == 0 and row["page_loads"] >= 1
    assert row["files_left_while_running"] == [] and row["left_after_shutdown"] == []


def test_an_upload_over_the_limit_is_refused_while_it_is_read(tiny_model_dir, monkeypatch):
    """A chunked body without Content-Length is counted as it arrives: the server answers 413 after little more
    than the limit, while the client is still sending (a raw socket, so nothing buffers the body first)."""
    import select
    import socket

    from turbosr import demo as demo_module

    monkeypatch.setattr(demo_module, "MAX_UPLOAD_BYTES", 100_000)
    url, server = _serve(demo_module.build_app({"tiny": tiny_model_dir}))
    port = int(url.rsplit(":", 1)[1].strip("/"))
    sent, answer = 0, b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            connection.sendall(b"POST /api/upscale HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                               b"Content-Type: multipart/form-data; boundary=x\r\n\r\n")
            chunk = b"10000\r\n" + b"\0" * 65536 + b"\r\n"
            for _ in range(1000):  # up to 64 MB offered
                if select.select([connection], [], [], 0.01)[0]:
                    answer = connection.recv(4096)
                    break
                try:
                    connection.sendall(chunk)
                except OSError:  # the server closed the connection after answering
                    answer = connection.recv(4096)
                    break
                sent += 65536
    finally:
        server.should_exit = True
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert sent < 8 * 2**20  # refused after about the limit, not after reading all 64 MB


def test_the_api_keeps_alpha(client):
    buffer = io.BytesIO()
    Image.new("RGBA", (20, 12), (90, 140, 200, 77)).save(buffer, "PNG")
    response = client.post("/api/upscale", files={"image": ("a.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 200
    out = Image.open(io.BytesIO(response.content))
    assert out.mode == "RGBA" and out.size == (80, 48) and abs(out.getpixel((40, 24))[3] - 77) <= 1


def test_demo_without_its_extra_names_the_extra(monkeypatch):
    from turbosr import demo as demo_module

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    with pytest.raises(ImportError, match=r"uvicorn: pip install 'turbosr\[demo\]'"):
        demo_module.launch({})


def test_stalled_and_vanishing_uploads_hold_no_queue_place(tiny_model_dir, monkeypatch, capfd):
    """Clients that send headers and a few bytes and then stall take no place in the job queue (a normal request
    still runs at once) and get 408 after UPLOAD_SECONDS; clients that disconnect mid-upload leave no traceback
    in the server's log."""
    import socket
    from urllib.parse import urlparse

    from turbosr import demo as demo_module

    monkeypatch.setattr(demo_module, "UPLOAD_SECONDS", 3.0)
    app = demo_module.build_app({"tiny": tiny_model_dir})
    url, server = _serve(app)
    host, port = urlparse(url).hostname, urlparse(url).port
    head = (f"POST /api/upscale HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            "Content-Length: 100000\r\n\r\n").encode()
    stalled = []
    try:
        for _ in range(demo_module.MAX_WAITING + 2):
            sock = socket.create_connection((host, port), timeout=30)
            sock.sendall(head + b"--x\r\n")
            stalled.append(sock)
        gone = socket.create_connection((host, port), timeout=30)
        gone.sendall(head + b"--x\r\n")
        gone.close()
        body, headers = _multipart(_png())
        status, reply, _ = _post(url, body, headers)
        assert status == 200 and reply["x-queue-position"] == "0"
        answer = stalled[0].recv(4096).decode(errors="replace")  # after UPLOAD_SECONDS
        assert " 408 " in answer.splitlines()[0], answer
        assert app.state.jobs.waiting == 0
    finally:
        for sock in stalled:
            sock.close()
        server.should_exit = True
    time.sleep(0.5)
    logged = capfd.readouterr()
    assert "Traceback" not in logged.err + logged.out and "ClientDisconnect" not in logged.err + logged.out
