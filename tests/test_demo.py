import io

from PIL import Image

from turbosr.demo import build_demo


def _call(app, method="GET", body=b"", content_type=""):
    captured = {}

    def start_response(status, headers):
        captured["status"] = status

    environ = {"REQUEST_METHOD": method, "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": content_type,
               "wsgi.input": io.BytesIO(body)}
    page = b"".join(app(environ, start_response)).decode()
    return captured["status"], page


def _multipart(fields, image_bytes):
    boundary = "XyZ123"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    body = "".join(parts).encode()
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
             f"Content-Type: image/png\r\n\r\n").encode() + image_bytes + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_demo_form_and_upscale(tiny_pipeline):
    app = build_demo(tiny_pipeline)
    status, page = _call(app)
    assert status == "200 OK" and "<form" in page and "x4" in page
    buffer = io.BytesIO()
    Image.new("RGB", (10, 6), (1, 2, 3)).save(buffer, format="PNG")
    body, content_type = _multipart({"steps": "1", "seed": "3", "strength": "1", "color_fix": "none"},
                                    buffer.getvalue())
    status, page = _call(app, "POST", body, content_type)
    assert status == "200 OK", page
    assert "10x6 -&gt; 40x24" in page or "10x6 -> 40x24" in page
    assert page.count("data:image/png;base64,") == 2


def test_demo_rejects_non_images(tiny_pipeline):
    body, content_type = _multipart({"steps": "1"}, b"plain text")
    status, page = _call(build_demo(tiny_pipeline), "POST", body, content_type)
    assert status == "400 Bad Request" and "not a readable image" in page
