"""A headless Chromium driven over the Chrome DevTools protocol (no extra package: ``websockets`` comes with
uvicorn[standard]): open a page, wait until Streamlit has finished rendering, screenshot it, read its DOM."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    exe = os.environ.get("AGENTWATCH_TEST_CHROMIUM")
    if exe:
        return exe
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


# Streamlit's page is ready when the script run is over (no status widget, no stale elements), the skeleton
# is gone and the DOM has stopped changing.
READY_JS = """(() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app) return null;
  const busy = document.querySelector('[data-testid="stStatusWidget"]') !== null
    || document.querySelector('[data-testid="stAppSkeleton"]') !== null
    || document.querySelector('[data-stale="true"]') !== null;
  const main = document.querySelector('[data-testid="stMain"]');
  return JSON.stringify({busy, size: document.body.innerHTML.length,
                         height: main ? main.scrollHeight : 0,
                         title: (document.querySelector('h1') || {}).textContent || ''});
})()"""


class Chromium:
    def __init__(self, exe: str, workdir: Path, *, width: int = 1400, height: int = 1000) -> None:
        from harness import free_port

        self.width, self.height = width, height
        port = free_port()
        self.log = open(workdir / "chromium.log", "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={workdir / 'profile'}", f"--window-size={width},{height}",
             "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={port}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=self.log,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}; see {workdir / 'chromium.log'}")
            try:
                targets = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=1).json()
                           if t.get("type") == "page"]  # fmt: skip
                if targets:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        if not targets:
            self.close()
            raise RuntimeError("chromium did not open its DevTools endpoint in 30 s")
        self.ws = connect(targets[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        self._ids = itertools.count(1)
        self.call("Page.enable")
        self.call("Runtime.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        mid = next(self._ids)
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expr: str) -> Any:
        return self.call("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value")

    def open(self, url: str, *, timeout: float = 30, settle: float = 0.6) -> float:
        """Navigate and wait until rendered; returns the seconds it took."""
        self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height, deviceScaleFactor=1,
                  mobile=False)  # fmt: skip
        t0 = time.monotonic()
        self.call("Page.navigate", url=url)
        time.sleep(0.3)
        last, stable_since, done_at = None, None, None
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            raw = self.eval(READY_JS)
            state = json.loads(raw) if raw else None
            now = time.monotonic()
            if state and not state["busy"] and state["title"]:
                key = (state["size"], state["height"])
                if key != last:
                    last, stable_since, done_at = key, now, now
                elif now - stable_since >= settle:
                    return done_at - t0
            else:
                last = None
            time.sleep(0.1)
        raise TimeoutError(f"{url} did not finish rendering in {timeout} s")

    def screenshot(self, path: Path, *, max_height: int = 5000) -> None:
        """The whole page: the viewport is stretched to the main area's scroll height first."""
        h = int(self.eval('document.querySelector(\'[data-testid="stMain"]\').scrollHeight') or self.height)
        h = min(max(h, self.height), max_height)
        self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=h, deviceScaleFactor=1, mobile=False)
        time.sleep(0.5)  # charts re-layout to the new size
        png = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"]
        path.write_bytes(base64.b64decode(png))

    def dom(self) -> str:
        return self.eval("document.documentElement.outerHTML") or ""

    def text(self) -> str:
        return self.eval("document.body.innerText") or ""

    def close(self) -> None:
        try:
            if getattr(self, "ws", None):
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            self.log.close()
