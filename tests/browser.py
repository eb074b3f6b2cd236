"""Headless Chromium driven through the DevTools protocol over a pipe (``--remote-debugging-
pipe``: JSON messages separated by NUL on file descriptors 3 and 4), with nothing but the
standard library. Used by the live report's test; skipped where Chromium is not installed."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    def __init__(self) -> None:
        exe = chromium()
        assert exe is not None
        self.profile = tempfile.mkdtemp(prefix="firepbt-chromium-")
        to_r, self._to_w = os.pipe()  # we write commands -> chromium reads fd 3
        self._from_r, from_w = os.pipe()  # chromium writes fd 4 -> we read
        # the shell puts the pipe ends where Chromium expects them (3: commands, 4: replies)
        cmd = " ".join(shlex.quote(x) for x in [exe, *FLAGS, f"--user-data-dir={self.profile}",
                                                "about:blank"])
        self.proc = subprocess.Popen(
            ["bash", "-c", f"exec {cmd} 3<&{to_r} 4>&{from_w}"],  # (dash: one-digit fds only)
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.profile, "stderr.txt"), "w"),  # noqa: SIM115
            pass_fds=(to_r, from_w))
        os.close(to_r)
        os.close(from_w)
        self._id = 0
        self._buf = b""
        self.session: str | None = None

    def _send(self, method: str, params: dict[str, Any] | None = None,
              session: str | None = None) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._from_r, 1 << 16)
                if not chunk:
                    with open(os.path.join(self.profile, "stderr.txt")) as f:
                        why = f.read()[-2000:]
                    raise RuntimeError(f"chromium closed its pipe: {why}")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def open(self, url: str) -> None:
        target = self._send("Target.createTarget", {"url": url})["targetId"]
        self.session = self._send("Target.attachToTarget",
                                  {"targetId": target, "flatten": True})["sessionId"]

    def text(self) -> str:
        """The page's visible text now (as the browser has it, after its own reloads)."""
        res = self._send("Runtime.evaluate", {"expression": "document.body ? "
                                              "document.body.innerText : ''",
                                              "returnByValue": True}, self.session)
        return str(res.get("result", {}).get("value", ""))

    def wait_text(self, predicate, timeout: float = 60.0) -> str:  # type: ignore[no-untyped-def]
        end = time.monotonic() + timeout
        text = ""
        while time.monotonic() < end:
            try:
                text = self.text()
            except RuntimeError:  # (the page was reloading)
                text = ""
            if predicate(text):
                return text
            time.sleep(0.25)
        raise AssertionError(f"the page never showed what was awaited; last text: {text[:300]!r}")

    def close(self) -> None:
        try:
            self._send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_w)
        os.close(self._from_r)
        shutil.rmtree(self.profile, ignore_errors=True)
