"""Debian's headless Chromium driven by selenium, for the page at /ui: requests logged, screenshots
at desktop and phone widths, downloads kept in a folder, and the page's `fetch` bent by rules (a slow
answer, an error, no network) for what a live gateway does not do on demand."""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
DESKTOP = (1280, 900)
PHONE = (375, 812)
NARROWEST = 320
SCREENSHOTS_ENV = "SAMI_UI_SCREENSHOTS"  # a folder to keep the screenshots in (the README's come from it)
OFFLINE_FLAGS = ("--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--no-first-run", "--disable-domain-reliability",
                 "--disable-client-side-phishing-detection", "--no-pings", "--metrics-recording-only")
# The page's `fetch`, wrapped: each rule {url (a part of it), method, times (-1: always), delay (ms),
# status and body (answered instead), fail (no answer at all)} applies to the requests it matches;
# `window.bentHits` counts the requests they touched. Rules and count start anew at each `bend_fetch`.
BEND_FETCH = """
window.bentRules = RULES;
window.bentHits = 0;
if (!window.realFetch) {
  window.realFetch = window.fetch;
  window.fetch = async (input, init = {}) => {
    const url = String(input.url || input), method = (init.method || "GET").toUpperCase();
    const rule = window.bentRules.find(r => url.includes(r.url) && (!r.method || r.method === method) && r.times);
    if (!rule) return window.realFetch(input, init);
    rule.times -= 1;
    window.bentHits += 1;
    if (rule.delay) await new Promise(resolve => setTimeout(resolve, rule.delay));
    if (rule.fail) throw new TypeError("Failed to fetch");
    if (!rule.status) return window.realFetch(input, init);
    return new Response(JSON.stringify(rule.body || {}), {status: rule.status,
                                                          headers: {"Content-Type": "application/json"}});
  };
}
"""


@dataclass
class Browser:
    """One Chromium with the page's origin; every URL it requested is kept in `requested`."""

    driver: Any
    origin: str
    downloads: Path
    screenshots: Path
    requested: list[str] = field(default_factory=list)

    def open(self) -> None:
        self.driver.get(self.origin + "/ui")
        self.wait(lambda: self.script("return document.body.dataset.ready === 'true'"), "page ready")

    def script(self, code: str, *args: Any) -> Any:
        return self.driver.execute_script(code, *args)

    def run_async(self, code: str, *args: Any) -> Any:
        """`code` may await; its `return` value comes back (selenium's async script callback)."""
        return self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            f"(async (...args) => {{ {code} }})(...Array.from(arguments).slice(0, -1))"
            ".then(done, (err) => done({error: String(err)}));", *args)

    def by_id(self, element_id: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, element_id)

    def visible(self, element_id: str) -> bool:
        return bool(self.script("const e = document.getElementById(arguments[0]);"
                                "return !!e && !e.closest('[hidden]') && e.getClientRects().length > 0;", element_id))

    def text(self, element_id: str) -> str:
        return str(self.by_id(element_id).text)

    def wait(self, check: Callable[[], Any], what: str, seconds: float = 60) -> Any:
        deadline = time.monotonic() + seconds
        while not (value := check()):
            if time.monotonic() > deadline:
                shown = self.script("return document.getElementById('error').innerText")
                raise AssertionError(f"timed out after {seconds} s waiting for {what}; error box: {shown!r}")
            time.sleep(0.1)
        return value

    def collect_requests(self) -> list[str]:
        """URLs requested since the last call (Chrome's performance log: the Network domain)."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requested.append(message["params"]["request"]["url"])
        return self.requested

    def foreign_requests(self) -> list[str]:
        own = (self.origin + "/", f"blob:{self.origin}/", "data:")
        return [url for url in self.collect_requests() if not url.startswith(own)]

    def console_errors(self) -> list[str]:
        """Uncaught errors and policy refusals in the console (answers of 4xx are expected, not these)."""
        return [entry["message"] for entry in self.driver.get_log("browser")
                if entry["level"] == "SEVERE" and ("Uncaught" in entry["message"] or "Refused" in entry["message"])]

    def bend_fetch(self, *rules: dict[str, Any]) -> None:
        """Rules for the page's `fetch` from now on (BEND_FETCH); none: every request as it is."""
        self.script(BEND_FETCH.replace("RULES", json.dumps([{"times": 1, **rule} for rule in rules])))

    def bend_fetch_on_load(self, *rules: dict[str, Any]) -> Callable[[], None]:
        """The same rules, set before the page's own scripts run on each load; returns their undoing."""
        added = self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {
            "source": BEND_FETCH.replace("RULES", json.dumps([{"times": 1, **rule} for rule in rules]))})
        return lambda: self.driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument",
                                                   {"identifier": added["identifier"]})

    def width(self, width: int, height: int) -> None:
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
        self.wait(lambda: self.script("return window.innerWidth") == width, f"a {width} px viewport", 10)

    def overflow(self) -> int:
        """How many pixels the page is wider than the viewport (0: no sideways scrolling)."""
        return int(self.script("return document.documentElement.scrollWidth - window.innerWidth"))

    def shoot(self, name: str) -> list[Path]:
        """The whole page at desktop and at phone width: `<name>-desktop.png`, `<name>-375.png`."""
        saved = []
        for label, (width, height) in (("desktop", DESKTOP), ("375", PHONE)):
            self.width(width, height)
            time.sleep(0.2)  # waveforms redraw for the new width
            assert self.overflow() <= 0, f"{name} at {width} px scrolls sideways by {self.overflow()} px"
            size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": max(height, size["height"]), "scale": 1}})
            path = self.screenshots / f"{name}-{label}.png"
            path.write_bytes(base64.b64decode(shot["data"]))
            assert path.stat().st_size > 10_000, f"{path.name} is nearly empty"
            saved.append(path)
        self.width(*DESKTOP)
        return saved


def start_browser(origin: str, downloads: Path, screenshots: Path) -> Browser:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                     f"--window-size={DESKTOP[0]},{DESKTOP[1]}", *OFFLINE_FLAGS):
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_script_timeout(60)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return Browser(driver, origin, downloads, screenshots)


def screenshot_folder(default: Path) -> Path:
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
