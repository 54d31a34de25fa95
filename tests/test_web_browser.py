"""A real browser (Debian's headless ``chromium``) opens ``wsmon web`` and the dashboard's queue
reaches it: the worksets of the store arrive over the page's WebSocket as the terminal output
xterm.js draws. Chromium is driven over the DevTools protocol (aiohttp, already in the api extra);
nothing is downloaded. On a machine without chromium the test skips and says so; CI installs it
(.ci/run) so there it runs."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from api_support import free_port
from waiting import wait_until

from wsmon.engine.store import open_store

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")

# Copies every WebSocket message the page receives into window.__wsmonText (decoded as UTF-8).
CAPTURE = """
(() => {
  window.__wsmonText = "";
  const Native = window.WebSocket;
  const decoder = new TextDecoder();
  function Capturing(url, protocols) {
    const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    ws.addEventListener("message", (event) => {
      const data = event.data;
      window.__wsmonText += typeof data === "string" ? data : decoder.decode(new Uint8Array(data));
    });
    return ws;
  }
  Capturing.prototype = Native.prototype;
  for (const k of ["CONNECTING", "OPEN", "CLOSING", "CLOSED"]) Capturing[k] = Native[k];
  window.WebSocket = Capturing;
})();
"""


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def _page_text(devtools: str, url: str, wanted: list[str], timeout: float) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{devtools}/json/list") as resp:
            pages = [t for t in await resp.json() if t["type"] == "page"]
        async with session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = iter(range(1, 10_000))

            async def call(method: str, **params):
                msg_id = next(ids)
                await ws.send_json({"id": msg_id, "method": method, "params": params})
                while True:
                    reply = json.loads((await ws.receive()).data)
                    if reply.get("id") == msg_id:
                        return reply.get("result", {})

            await call("Page.enable")
            await call("Page.addScriptToEvaluateOnNewDocument", source=CAPTURE)
            await call("Page.navigate", url=url)
            deadline = time.monotonic() + timeout
            text = ""
            while time.monotonic() < deadline:
                result = await call("Runtime.evaluate", expression="window.__wsmonText || ''",
                                    returnByValue=True)
                text = ANSI.sub("", result.get("result", {}).get("value") or "")
                if all(name in text for name in wanted):
                    return text
                await asyncio.sleep(0.25)
            return text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium); "
                                              ".ci/run installs it so CI runs this test")
def test_a_browser_sees_the_queue_of_wsmon_web(tmp_path: Path, no_user_config) -> None:
    db = tmp_path / "state.db"
    store = open_store(f"sqlite:///{db}")
    names = ["alpha-genome-01", "beta-exome-02", "gamma-panel-03"]
    for i, name in enumerate(names):
        store.register_workset(name, "lab-bucket", f"src/{name}/", priority=("urgent", "normal", "low")[i])
    store.close()
    port = free_port()
    web_log = open(tmp_path / "web.log", "wb")  # noqa: SIM115 - closed in the finally below
    web = subprocess.Popen([sys.executable, "-m", "wsmon.cli", "--store", f"sqlite:///{db}", "web",
                            "--bind", f"127.0.0.1:{port}"], stdout=web_log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    browser = None
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until(lambda: web.poll() is not None or _answers(url), "wsmon web to answer", timeout=60.0)
        assert web.poll() is None, (tmp_path / "web.log").read_text()
        browser = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        devtools = None
        for line in browser.stderr:  # the line chromium prints once it listens
            found = re.search(r"DevTools listening on ws://([^/]+)/", line)
            if found:
                devtools = f"http://{found.group(1)}"
                break
        assert devtools, "chromium did not start its DevTools endpoint"
        text = asyncio.run(_page_text(devtools, url, names, timeout=90))
        missing = [n for n in names if n not in text]
        assert not missing, (f"the dashboard in the browser never showed {missing}; it showed:\n"
                             f"{text[-2000:]}\nwsmon web log:\n{(tmp_path / 'web.log').read_text()[-2000:]}")
    finally:
        for proc in (browser, web):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        web_log.close()
