"""Drive the web demo in headless Chromium: upload a photo, run it, check the result, save a screenshot.

    python scripts/demo_screenshot.py --image src/turbosr/samples/coffee.png --out docs/img/demo.png

Starts the demo (the built-in model unless --model is given) on a free loopback port, opens it in Debian's
Chromium through Selenium (nothing downloaded: /usr/bin/chromium and /usr/bin/chromedriver), uploads the image,
clicks Upscale, waits for the before/after slider, and saves a screenshot. The helpers are shared with
tests/test_demo.py, which runs the same flow with a tiny model.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

SCRIPT = "scripts/demo_screenshot.py"
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER = ("/usr/bin/chromedriver",)


def find_browser() -> tuple[str, str] | None:
    """(browser, driver) paths of a system Chromium and its driver, or None."""
    browser = next((p for p in CHROMIUM if Path(p).is_file()), None)
    driver = next((p for p in CHROMEDRIVER if Path(p).is_file()), shutil.which("chromedriver"))
    return (browser, driver) if browser and driver else None


def serve(app: Any) -> tuple[str, Any]:
    """Serve an ASGI app on a free 127.0.0.1 port in a background thread; returns (url, server)."""
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


def chromium(browser: str, driver: str, width: int = 1400, height: int = 1000) -> Any:
    """Headless Chromium with the network quiet (no background or component traffic) and request logging."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def requested_urls(driver: Any) -> list[str]:
    """Every URL the page asked for so far (from Chromium's performance log)."""
    import json

    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def upscale_in_browser(driver: Any, url: str, image: Path, timeout: float = 180) -> dict[str, Any]:
    """Open the demo, upload ``image``, click Upscale; returns the slider images' natural sizes and the info
    line, or the error text the page showed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, timeout)
    upload = wait.until(expected_conditions.presence_of_element_located(
        (By.CSS_SELECTOR, "#input-image input[type=file]")))
    upload.send_keys(str(Path(image).resolve()))
    time.sleep(1.0)  # the component shows its preview
    driver.find_element(By.ID, "upscale-button").click()

    def finished(browser: Any) -> dict[str, Any] | None:
        images = browser.find_elements(By.CSS_SELECTOR, "#slider-bicubic img")
        sizes = [browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
                 for img in images]
        if len(sizes) >= 2 and all(w > 0 for w, _ in sizes):
            return {"sizes": sizes, "info": browser.find_element(By.ID, "run-info").text}
        errors = [" ".join(e.get_attribute("textContent").split())
                  for e in browser.find_elements(By.CSS_SELECTOR, ".toast-body.error")]
        return {"error": errors[0]} if errors else None

    return wait.until(finished)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the built-in models)")
    parser.add_argument("--out", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from turbosr.demo import build_app

    found = find_browser()
    if found is None:
        raise SystemExit("no Chromium/chromedriver: apt-get install chromium chromium-driver")
    url, server = serve(build_app({args.model.name: args.model} if args.model else None))
    driver = chromium(*found)
    try:
        result = upscale_in_browser(driver, url, args.image)
        if "error" in result:
            raise SystemExit(f"the demo showed an error: {result['error']}")
        time.sleep(1.0)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
        outside = [u for u in requested_urls(driver) if not u.startswith((url, "data:", "blob:"))]
        print(f"{args.out}: {result['info']}; slider images {result['sizes']}; requests outside the demo: "
              f"{outside or 'none'}")
    finally:
        driver.quit()
        server.should_exit = True
    return 0


if __name__ == "__main__":
    sys.exit(main())
