"""Driving the web demo in a real browser (headless Chromium through Selenium, extra ``test``): what
``scripts/demo_screenshot.py`` and tests/test_demo.py's browser test do. Nothing is downloaded: Debian's
/usr/bin/chromium and /usr/bin/chromedriver (:func:`turbosr.demo.find_browser`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


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


