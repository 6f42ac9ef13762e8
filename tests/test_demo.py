"""The web demo: the HTTP endpoint's answers (same loader and limits as the CLI) and a real browser run."""

from __future__ import annotations

import importlib.util
import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

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
    import torch

    from turbosr.models import build_model, model_config
    from turbosr.pipeline import SRPipeline

    torch.manual_seed(0)
    config = model_config("tiny", scale=4)
    denoiser, autoencoder = build_model(config)
    autoencoder.fit(torch.rand(4, 3, 32, 32) * 2 - 1)
    folder = tmp_path_factory.mktemp("model") / "tiny-x4"
    SRPipeline(denoiser, autoencoder, config).save_pretrained(folder)
    return folder


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


def test_build_demo_returns_the_app_without_launching(tiny_model_dir):
    from turbosr.demo import build_demo

    demo = build_demo({"tiny": tiny_model_dir})
    assert isinstance(demo, gradio.Blocks) and not demo.is_running


def _browser_or_skip():
    spec = importlib.util.spec_from_file_location("demo_screenshot", ROOT / "scripts" / "demo_screenshot.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    if importlib.util.find_spec("selenium") is None:
        pytest.skip("selenium is not installed (pip install 'turbosr[test]')")
    found = helpers.find_browser()
    if found is None:
        pytest.skip("no system Chromium + chromedriver (apt-get install chromium chromium-driver; .ci/run does)")
    return helpers, found


def test_real_browser_upload_run_slider_and_readable_errors(tiny_model_dir, tmp_path):
    """Headless Chromium: upload a photo, click Upscale, the slider shows two images 4x the input's size;
    a file that is not an image gives a readable one-line message, not a traceback; nothing is fetched from
    outside the demo's own address."""
    helpers, (browser, driver_path) = _browser_or_skip()
    from turbosr.corpus import sample_path
    from turbosr.demo import build_app

    url, server = helpers.serve(build_app({"tiny": tiny_model_dir}))
    driver = helpers.chromium(browser, driver_path)
    try:
        result = helpers.upscale_in_browser(driver, url, sample_path("chelsea"))
        assert "error" not in result, result
        width, height = Image.open(sample_path("chelsea")).size
        assert result["sizes"] == [[4 * width, 4 * height]] * 2
        assert f"{4 * width}x{4 * height}" in result["info"]
        bad = tmp_path / "broken.png"
        bad.write_bytes(b"not an image at all")
        failed = helpers.upscale_in_browser(driver, url, bad)
        assert "error" in failed and "not a supported image format" in failed["error"], failed
        assert "Traceback" not in failed["error"]
        outside = [u for u in helpers.requested_urls(driver) if not u.startswith((url, "data:", "blob:"))]
        assert outside == []
    finally:
        driver.quit()
        server.should_exit = True
