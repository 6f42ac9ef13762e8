"""A local web demo: upload an image, get the upscaled result beside bicubic. Standard library only (WSGI).

``build_demo(pipeline)`` returns a WSGI application; ``launch(pipeline, port)`` serves it on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Callable, Iterable
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from turbosr.degradations import upsample_lq
from turbosr.image import pil_to_tensor, tensor_to_pil
from turbosr.pipeline import SRPipeline

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 20 * 2**20
MAX_INPUT_PIXELS = 1024 * 1024

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>turbosr demo</title>
<style>body{{font-family:sans-serif;margin:2em}} img{{max-width:48%;image-rendering:pixelated}}
.error{{color:#b00}}</style></head><body>
<h1>turbosr x{scale}</h1>
<form method="post" enctype="multipart/form-data">
<input type="file" name="image" accept="image/*" required>
steps <input type="number" name="steps" value="{steps}" min="1" max="50">
strength <input type="number" name="strength" value="{strength}" min="0.05" max="1" step="0.05">
seed <input type="number" name="seed" value="{seed}">
colour fix <select name="color_fix">{fix_options}</select>
<button type="submit">Upscale</button></form>
{body}</body></html>"""


def _png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _parse_form(environ: dict[str, Any]) -> dict[str, Any]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length > MAX_UPLOAD_BYTES:
        raise ValueError(f"upload too large ({length} bytes; limit {MAX_UPLOAD_BYTES})")
    body = environ["wsgi.input"].read(length)
    header = f"Content-Type: {environ.get('CONTENT_TYPE', '')}\r\n\r\n".encode()
    message = BytesParser(policy=default_policy).parsebytes(header + body)
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[name] = part.get_payload(decode=True) if part.get_filename() else part.get_content().strip()
    return fields


def build_demo(pipeline: SRPipeline) -> Callable[[dict[str, Any], Callable], Iterable[bytes]]:
    """A WSGI app: GET shows the form; POST upscales the uploaded image and shows input, bicubic and turbosr."""

    def app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        values = {"steps": 1, "strength": 1.0, "seed": 0, "color_fix": "none"}
        body = ""
        status = "200 OK"
        if environ.get("REQUEST_METHOD") == "POST":
            try:
                form = _parse_form(environ)
                if not form.get("image"):
                    raise ValueError("no image uploaded")
                values = {"steps": int(form.get("steps", 1)), "strength": float(form.get("strength", 1.0)),
                          "seed": int(form.get("seed", 0)), "color_fix": str(form.get("color_fix", "none"))}
                try:
                    image = Image.open(io.BytesIO(form["image"]))
                    image.load()
                except (UnidentifiedImageError, OSError) as error:
                    raise ValueError(f"not a readable image ({error})") from None
                if image.width * image.height > MAX_INPUT_PIXELS:
                    raise ValueError(f"image too large for the demo ({image.width}x{image.height}; "
                                     f"limit {MAX_INPUT_PIXELS} pixels): use the turbosr upscale command")
                rgb = pil_to_tensor(image)
                generator = torch.Generator().manual_seed(values["seed"])
                output = pipeline(rgb, num_steps=values["steps"], strength=values["strength"],
                                  color_fix=values["color_fix"], generator=generator)
                bicubic = tensor_to_pil(upsample_lq(rgb, pipeline.scale))
                body = (f"<p>{image.width}x{image.height} -> {output.shape[-1]}x{output.shape[-2]}</p>"
                        f"<p>bicubic (left), turbosr (right)</p>"
                        f'<img alt="bicubic" src="{_png_data_uri(bicubic)}"> '
                        f'<img alt="turbosr" src="{_png_data_uri(tensor_to_pil(output))}">')
            except ValueError as error:
                status = "400 Bad Request"
                body = f'<p class="error">{html.escape(str(error))}</p>'
        options = "".join(f'<option{" selected" if fix == values["color_fix"] else ""}>{fix}</option>'
                          for fix in ("none", "adain", "wavelet"))
        page = PAGE.format(scale=pipeline.scale, fix_options=options, body=body,
                           **{k: html.escape(str(v)) for k, v in values.items() if k != "color_fix"})
        start_response(status, [("Content-Type", "text/html; charset=utf-8")])
        return [page.encode()]

    return app


def launch(pipeline: SRPipeline, port: int = 7860) -> None:
    """Serve the demo on http://127.0.0.1:PORT (loopback only) until interrupted."""
    from wsgiref.simple_server import make_server

    with make_server("127.0.0.1", port, build_demo(pipeline)) as server:
        logger.warning("turbosr demo on http://127.0.0.1:%d (Ctrl-C to stop)", port)
        server.serve_forever()
