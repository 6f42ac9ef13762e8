"""The local web demo (Gradio, extra ``demo``): upload or paste an image, compare before/after on a slider.

- :func:`build_demo` returns the Gradio ``Blocks`` app without launching it (tests drive it);
- :func:`build_app` returns the FastAPI server: the demo at ``/`` and a plain HTTP endpoint ``POST /api/upscale``
  (multipart ``image`` + form fields; PNG back, or a one-line JSON error with a 4xx status);
- :func:`launch` serves it on 127.0.0.1 unless told otherwise.

Every input goes through :func:`turbosr.image_files.load_image` (EXIF orientation; the pixel limit is read from the
header before anything is decoded) and every option is checked on the server by :func:`upscale_upload`, the one
function both the page and the endpoint call. Nothing is fetched from the internet: analytics are off and the
theme uses the system's fonts. One job runs at a time; page jobs wait in Gradio's visible queue, API requests in
a bounded queue of their own (a full queue answers 503 with Retry-After), and the model always runs in a worker
thread, never on the server's event loop, so the page stays responsive while an upscale runs. The upload limit
is enforced while the body is read; result files are deleted after an API response is sent, the page keeps
the last few results only, and the working folder is removed at shutdown.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import importlib.util
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from turbosr.colorfix import COLOR_FIXES
from turbosr.pipeline import DEFAULT_TILE, DEFAULT_TILE_OVERLAP, SRPipeline

MAX_INPUT_PIXELS = 1024 * 1024  # per input image (x4: a 16-megapixel output)
MAX_UPLOAD = "20mb"
MAX_UPLOAD_BYTES = 20 * 2**20
MAX_WAITING = 8  # API requests that may wait for the one running job; more get 503 + Retry-After
MAX_READING = 16  # uploads read at once (each up to MAX_UPLOAD_BYTES); more get 503 + Retry-After
UPLOAD_SECONDS = 60.0  # an upload not fully received by then gets 408: a stalled client holds no place
KEEP_RESULTS = 8  # page results whose files are kept (older ones are deleted)
MAX_STEPS = 50
TILES = (256, 512, 1024)


class DemoInputError(ValueError):
    """A request the demo refuses (bad image, too large, bad option): shown as one line, HTTP 4xx."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Result:
    """What one upscale produced: output (lossless PNG at full resolution), comparison images, timing."""

    output_path: Path
    bicubic_path: Path
    input_view_path: Path
    seconds: float
    size: tuple[int, int]

    def delete(self) -> None:
        for path in (self.output_path, self.bicubic_path, self.input_view_path):
            path.unlink(missing_ok=True)


class RecentResults:
    """The page's last ``keep`` results; adding one deletes the files of the oldest beyond that (thread-safe)."""

    def __init__(self, keep: int = KEEP_RESULTS) -> None:
        self.results: collections.deque[Result] = collections.deque()
        self.keep = keep
        self.lock = threading.Lock()

    def add(self, result: Result) -> Result:
        with self.lock:
            self.results.append(result)
            while len(self.results) > self.keep:
                self.results.popleft().delete()
        return result


def model_choices(models: dict[str, Path]) -> list[tuple[str, str]]:
    """(label, name) per model for the page's menu: built-in models say what they are for."""
    from turbosr.weights import MODEL_PURPOSES

    return [(f"{name}: {MODEL_PURPOSES[name]}" if name in MODEL_PURPOSES else name, name) for name in models]


def builtin_models() -> dict[str, Path]:
    """The installed built-in models by name."""
    from turbosr.weights import DEFAULT_BUILTINS, builtin_model_dir, installed_builtins

    names = sorted(installed_builtins(), key=lambda name: name not in DEFAULT_BUILTINS.values())  # defaults first
    return {name: builtin_model_dir(name) for name in names}


class ModelCache:
    """Loads each model folder once (CPU or the given device) and keeps it."""

    def __init__(self, models: dict[str, Path], device: str = "cpu") -> None:
        if not models:
            raise ValueError("the demo needs at least one model")
        self.models, self.device, self.loaded = models, device, {}

    def get(self, name: str) -> SRPipeline:
        if name not in self.models:
            raise DemoInputError(f"unknown model {name!r}; choose one of {', '.join(self.models)}")
        if name not in self.loaded:
            self.loaded[name] = SRPipeline.from_pretrained(self.models[name], device=self.device)
        return self.loaded[name]


def step_limit(pipeline: SRPipeline) -> int:
    """The most steps the page offers for a model: its folder's allowed counts (one step for the built-ins,
    whose decoders were trained on one-step latents), else the page's own limit."""
    allowed = pipeline.sampler.allowed_steps
    return min(max(allowed), MAX_STEPS) if allowed else MAX_STEPS


def upscale_upload(cache: ModelCache, path: str | Path, model: str, steps: int, seed: int, color_fix: str, tile: int,
                 work_dir: Path, progress: Callable[[int, int], None] | None = None,
                 fidelity: float | None = None) -> Result:
    """Check every option, load the image with the CLI's loader and limits, upscale, write the results.
    ``fidelity`` None: the model's default CFW weight."""
    from turbosr.degradations import upsample_lq
    from turbosr.image import upscale_alpha
    from turbosr.image_files import ImageReadError, load_image, read_image_size, save_image

    # the page's own limits; every option is then checked by the pipeline's one validator
    if not 1 <= int(steps) <= MAX_STEPS:
        raise DemoInputError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
    if tile not in TILES:
        raise DemoInputError(f"tile must be one of {', '.join(map(str, TILES))}, got {tile}")
    pipeline = cache.get(model)
    fidelity_option = fidelity if fidelity or pipeline.has_cfw else None  # w = 0 (or none) is "off" on any model
    try:
        pipeline.check_options(int(steps), 1.0, int(tile), min(DEFAULT_TILE_OVERLAP, int(tile) // 4), color_fix,
                               fidelity_option)
    except ValueError as error:
        raise DemoInputError(str(error)) from None
    try:
        width, height = read_image_size(path)  # the header only: nothing is decoded before this check
        if width * height > MAX_INPUT_PIXELS:
            raise DemoInputError(f"the image is {width}x{height} pixels; this demo takes at most "
                                 f"{MAX_INPUT_PIXELS:,} (1024x1024): downscale it or use `turbosr upscale`", 413)
        loaded = load_image(path, max_pixels=MAX_INPUT_PIXELS)
    except ImageReadError as error:
        raise DemoInputError(str(error).replace(f"{path}: ", "").replace(str(path), "the image"), 415) from None
    start = time.perf_counter()
    output = pipeline(loaded.rgb, num_steps=int(steps), tile=int(tile), tile_overlap=min(DEFAULT_TILE_OVERLAP,
                      int(tile) // 4), color_fix=color_fix, generator=torch.Generator().manual_seed(int(seed)),
                      fidelity=fidelity_option, progress=progress)
    seconds = time.perf_counter() - start
    work_dir.mkdir(parents=True, exist_ok=True)
    stem = f"turbosr-{model}-{time.time_ns()}-{threading.get_ident()}"
    result = Result(work_dir / f"{stem}.png", work_dir / f"{stem}-bicubic.png", work_dir / f"{stem}-input.png",
                    seconds, (output.shape[-1], output.shape[-2]))
    alpha = upscale_alpha(loaded.alpha, pipeline.scale) if loaded.alpha is not None else None
    save_image(output, result.output_path, alpha=alpha, icc_profile=loaded.icc_profile)
    save_image(upsample_lq(loaded.rgb, pipeline.scale).clamp(0, 1), result.bicubic_path)
    nearest = torch.nn.functional.interpolate(loaded.rgb, scale_factor=pipeline.scale, mode="nearest")
    save_image(nearest, result.input_view_path)  # the input at the output's display size
    return result


def offline_theme() -> Any:
    """Gradio's default theme with the system's fonts (the default would ask Google Fonts for Inter)."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def _path_only(preprocess: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """gr.Image's preprocessing, but an uploaded file's path is handed over untouched: Gradio's own step opens it
    with PIL (a second loader without our limits); ours (load_image) reads it in upscale_upload. (Set on the
    instance: a gr.Image subclass would make Gradio write a .pyi stub into the package.)"""

    def wrapped(payload: Any) -> Any:
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return payload.path
        return preprocess(payload)

    return wrapped


def build_demo(models: dict[str, Path] | None = None, device: str = "cpu", work_dir: Path | None = None,
               cache: ModelCache | None = None) -> Any:
    """The Gradio app (not launched). ``models``: {name: model folder}, default the built-in models."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        raise ImportError("the web demo needs Gradio: pip install 'turbosr[demo]'") from None
    import PIL.Image

    # PIL's global bomb guard would fire inside Gradio's own header read with a generic error; our loader
    # checks the pixel count from the header (MAX_INPUT_PIXELS) and explains it instead.
    PIL.Image.MAX_IMAGE_PIXELS = None
    cache = cache or ModelCache(models or builtin_models(), device)
    work = work_dir or _work_folder()
    recent = RecentResults()

    def run(path: str | None, model: str, steps: float, seed: float, color_fix: str, tile: str, fidelity: float,
            progress: Any = gr.Progress()) -> tuple:  # noqa: B008  (Gradio's way to ask for a progress bar)
        if not path:
            raise gr.Error("upload or paste an image first", print_exception=False)
        try:
            result = recent.add(upscale_upload(
                cache, path, model, int(steps), int(seed), color_fix, int(tile), work,
                progress=lambda i, n: progress((i + 1) / n, desc=f"denoising step {i + 1}/{n}"),
                fidelity=float(fidelity)))
        except (DemoInputError, ValueError) as error:
            raise gr.Error(str(error).splitlines()[0], print_exception=False) from None
        info = (f"{result.size[0]}x{result.size[1]} in {result.seconds:.2f} s ({model}, {int(steps)} step"
                f"{'s' if int(steps) > 1 else ''})")
        return ((str(result.bicubic_path), str(result.output_path)),
                (str(result.input_view_path), str(result.output_path)), str(result.output_path), info)

    # Gradio copies results into its own cache: delete_cache clears files older than an hour, every 10 minutes
    with gr.Blocks(title="turbosr", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown("# turbosr: one-step diffusion super-resolution")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", sources=["upload", "clipboard"], label="input image",
                                 elem_id="input-image")
                image.preprocess = _path_only(image.preprocess)
                model = gr.Dropdown(model_choices(cache.models), value=next(iter(cache.models)), label="model")
                first = cache.get(model.value)
                # a one-step model shows its one step fixed (a slider needs minimum < maximum)
                steps = gr.Slider(1, max(step_limit(first), 2), value=first.default_steps, step=1,
                                  interactive=step_limit(first) > 1, label="steps (the counts this model supports)")
                seed = gr.Number(0, precision=0, label="seed")
                color_fix = gr.Radio(list(COLOR_FIXES), value="none", label="colour fix")  # colorfix's own list
                tile = gr.Radio([str(t) for t in TILES], value=str(DEFAULT_TILE), label="tile (output pixels)")
                # starts at each model's own default w (the x4's: 1)
                fidelity = gr.Slider(0, 1, value=cache.get(model.value).default_fidelity, step=0.05,
                                     label="fidelity w (models with CFW modules: 0 = realism, 1 = fidelity to the input)")
                model.change(lambda name: cache.get(name).default_fidelity, model, fidelity)
                model.change(lambda name: gr.update(maximum=max(step_limit(cache.get(name)), 2),
                                                    interactive=step_limit(cache.get(name)) > 1,
                                                    value=cache.get(name).default_steps), model, steps)
                button = gr.Button("Upscale", variant="primary", elem_id="upscale-button")
            with gr.Column(scale=2):
                info = gr.Markdown(elem_id="run-info")
                versus_bicubic = gr.ImageSlider(label="bicubic | turbosr", type="filepath", elem_id="slider-bicubic",
                                                height=420)
                versus_input = gr.ImageSlider(label="input | turbosr (same display size)", type="filepath", height=420)
                download = gr.File(label="full-resolution PNG", elem_id="download")
        button.click(run, [image, model, steps, seed, color_fix, tile, fidelity],
                     [versus_bicubic, versus_input, download, info], concurrency_limit=1)
    return demo


def _work_folder() -> Path:
    """A fresh temporary folder for results, removed when the process exits."""
    work = Path(tempfile.mkdtemp(prefix="turbosr-demo-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    return work


class JobQueue:
    """One job at a time in a worker thread, at most ``max_waiting`` admitted requests waiting: the server's event
    loop never runs the model, so other requests (the page itself) are answered while a job runs."""

    def __init__(self, max_waiting: int = MAX_WAITING) -> None:
        self.max_waiting = max_waiting
        self.waiting = 0  # admitted and not yet running (still uploading, or queued behind the lock)
        self.lock = asyncio.Lock()
        self.seconds = 10.0  # the last job's duration: the Retry-After hint

    def admit(self) -> int | None:
        """Take a place in the queue on arrival: its position (0: runs at once), or None when ``max_waiting``
        requests already wait. Check and count happen with no ``await`` between them, so requests arriving
        together get distinct positions and the bound holds. An admitted request ends with ``run`` or ``leave``."""
        if self.waiting >= self.max_waiting:
            return None
        position = self.waiting + (1 if self.lock.locked() else 0)
        self.waiting += 1
        return position

    def leave(self) -> None:
        """Give an admitted request's place back without running it (a bad upload, a dropped connection)."""
        self.waiting -= 1

    async def run(self, function: Callable[[], Any]) -> Any:
        """Run an admitted request's job in a worker thread once the jobs ahead of it are done."""
        entered = False
        try:
            async with self.lock:
                self.waiting -= 1
                entered = True
                start = time.perf_counter()
                try:
                    return await asyncio.to_thread(function)
                finally:
                    self.seconds = time.perf_counter() - start
        finally:
            if not entered:  # cancelled while waiting
                self.waiting -= 1


async def read_limited(request: Any, limit: int) -> bytes | None:
    """The request body, read in chunks and abandoned as soon as it passes ``limit`` bytes (None): a chunked
    upload without Content-Length is held to the limit too."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(models: dict[str, Path] | None = None, device: str = "cpu") -> Any:
    """FastAPI server: the demo at ``/`` and ``POST /api/upscale`` (same checks, PNG or a 4xx JSON error; 503
    with Retry-After when the queue is full)."""
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.responses import FileResponse, JSONResponse, Response
    from starlette.background import BackgroundTask

    work = _work_folder()
    cache = ModelCache(models or builtin_models(), device)
    demo = build_demo(work_dir=work, cache=cache)
    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> Any:
        yield
        shutil.rmtree(work, ignore_errors=True)  # at shutdown: no result or upload is left behind

    app = FastAPI(lifespan=lifespan)
    jobs = JobQueue(MAX_WAITING)
    app.state.work_dir, app.state.jobs = work, jobs  # (tests look at them)

    async def read_form(request: Any) -> tuple[Path, dict[str, Any]] | Any:
        """The upload saved to the work folder and the job's options, or the JSON error response."""
        body = await read_limited(request, MAX_UPLOAD_BYTES + 65536)
        if body is None:
            return JSONResponse({"error": f"upload larger than {MAX_UPLOAD}"}, status_code=413)
        request._body = body  # Starlette parses the form from the body already read
        try:
            form = await request.form()
        except Exception:  # noqa: BLE001  (a body that is not a multipart form)
            return JSONResponse({"error": "send a multipart form with the image in the file field 'image'"},
                                status_code=422)
        image = form.get("image")
        if image is None or isinstance(image, str):
            return JSONResponse({"error": "send the image as the multipart file field 'image'"}, status_code=422)
        try:
            options = {"model": str(form.get("model", next(iter(cache.models)))), "steps": int(form.get("steps", 1)),
                       "seed": int(form.get("seed", 0)), "color_fix": str(form.get("color_fix", "none")),
                       "tile": int(form.get("tile", DEFAULT_TILE))}
            if form.get("fidelity") is not None:  # absent: the model's default w
                options["fidelity"] = float(form.get("fidelity"))
        except ValueError:  # a form field that is not a number
            return JSONResponse({"error": "steps, seed and tile must be whole numbers, fidelity a number"},
                                status_code=422)
        upload = work / f"upload-{time.time_ns()}-{id(request)}"
        upload.write_bytes(await image.read())
        return upload, options

    reading = [0]  # uploads being read now

    async def api_upscale(request: Any) -> Any:
        """multipart: ``image`` (file) and optional ``model``, ``steps``, ``seed``, ``color_fix``, ``tile``,
        ``fidelity``. The response says where the request queued (X-Queue-Position: 0 = ran at once). The upload
        is read first, within UPLOAD_SECONDS (a stalled or vanished client takes no queue place and prints no
        traceback); then the request takes its place in the queue."""
        from starlette.requests import ClientDisconnect

        if reading[0] >= MAX_READING:
            return JSONResponse({"error": f"busy: {MAX_READING} uploads are being received; try again"},
                                status_code=503, headers={"Retry-After": "5"})
        reading[0] += 1
        try:
            prepared = await asyncio.wait_for(read_form(request), UPLOAD_SECONDS)
        except asyncio.TimeoutError:  # (TimeoutError itself from Python 3.11 on)
            return JSONResponse({"error": f"the upload did not arrive within {UPLOAD_SECONDS:g} s"}, status_code=408)
        except ClientDisconnect:
            return Response(status_code=499)  # the client left mid-upload: nobody reads this answer
        finally:
            reading[0] -= 1
        if not isinstance(prepared, tuple):
            return prepared
        position = jobs.admit()  # before any further await: concurrent arrivals get distinct places
        if position is None:
            prepared[0].unlink(missing_ok=True)
            return JSONResponse({"error": f"busy: {jobs.max_waiting} requests are already waiting; try again"},
                                status_code=503, headers={"Retry-After": str(max(1, round(jobs.seconds)))})
        upload, options = prepared
        try:
            result = await jobs.run(lambda: upscale_upload(cache, upload, work_dir=work, **options))
        except (DemoInputError, ValueError) as error:
            status = error.status if isinstance(error, DemoInputError) else 422
            return JSONResponse({"error": str(error).splitlines()[0]}, status_code=status)
        finally:
            upload.unlink(missing_ok=True)
        return FileResponse(result.output_path, media_type="image/png", background=BackgroundTask(result.delete),
                            headers={"X-Seconds": f"{result.seconds:.3f}", "X-Queue-Position": str(position)})

    app.add_route("/api/upscale", api_upscale, methods=["POST"])  # a plain Starlette route: request in, response out
    return gr.mount_gradio_app(app, demo.queue(default_concurrency_limit=1), path="/", theme=offline_theme(),
                               max_file_size=MAX_UPLOAD, show_error=True)


CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER = ("/usr/bin/chromedriver",)


def find_browser() -> tuple[str, str] | None:
    """(browser, driver) paths of a system Chromium and its driver, or None."""
    browser = next((p for p in CHROMIUM if Path(p).is_file()), None)
    driver = next((p for p in CHROMEDRIVER if Path(p).is_file()), shutil.which("chromedriver"))
    return (browser, driver) if browser and driver else None


def serve(app: Any) -> tuple[str, Any]:
    """Serve an ASGI app on a free 127.0.0.1 port in a background thread; returns (url, server)."""
    import socket

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    if not server.started:
        raise RuntimeError("the demo server did not start")
    return f"http://127.0.0.1:{port}/", server



def launch(models: dict[str, Path] | None = None, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           device: str = "cpu") -> None:
    """Serve the demo (blocking). Binds 127.0.0.1 unless ``host`` says otherwise; ``share`` asks Gradio for a
    public link (needs the internet; the /api/upscale endpoint is not served then)."""
    missing = [name for name in ("gradio", "fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"the web demo needs {', '.join(missing)}: pip install 'turbosr[demo]'")
    if share:
        build_demo(models, device).queue(default_concurrency_limit=1).launch(
            server_name=host, server_port=port, share=True, max_file_size=MAX_UPLOAD, theme=offline_theme())
        return
    import uvicorn

    uvicorn.run(build_app(models, device), host=host, port=port, log_level="warning")
