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
import sys
import time
from pathlib import Path

from turbosr.demo import find_browser, serve
from turbosr.demo_browser import chromium, requested_urls, upscale_in_browser

SCRIPT = "scripts/demo_screenshot.py"


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
