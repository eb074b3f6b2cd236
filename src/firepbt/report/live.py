"""The live report: ``firepbt report STORE --watch`` serves the report of a store that another
process is writing, and keeps it current.

The page is the report (:func:`firepbt.report.report`: the same words and figures - the story
so far, the lineage of the current top point, Figure 4a with each sub-population's
hyperparameters so far, the events), with a line at the top saying which round it shows. The
server looks at the store every ``every`` seconds; when a new round has been committed it
renders the page again, and the page, which asks the server every few seconds which round it
has, reloads itself. It reads the store read-only, each rendering inside one SQLite read
snapshot (:meth:`firepbt.store.Store.snapshot`), so the writer is never blocked (WAL) and a
round is shown with all of its records or not at all. Served on loopback by default.
"""

from __future__ import annotations

import html
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..store import Store

_SCRIPT = ("<script>(function(){{var shown={round};setInterval(function(){{"
           "fetch('state.json',{{cache:'no-store'}}).then(function(r){{return r.json()}})"
           ".then(function(s){{if(s.round!==shown)location.reload()}}).catch(function(){{}})"
           "}},{ms})}})()</script>")


def last_round(path: str | Path) -> tuple[int, int, int, int]:
    """``(round, step, rounds, steps)`` of the last committed round (0 before the first)."""
    from ..config import ExperimentConfig

    st = Store.open(path, readonly=True)
    try:
        cfg = ExperimentConfig.from_dict(st.config)
        last = st.last_round()
    finally:
        st.close()
    r, s = (0, 0) if last is None else (last.round, last.step)
    return r, s, cfg.rounds, cfg.steps


class LiveReport:
    """The page of one store, rendered again when a round is committed."""

    def __init__(self, store: str | Path, every: float = 2.0) -> None:
        self.store = Path(store)
        self.every = every
        self.round = -1
        self.html = b"<!doctype html><p>rendering the first report...</p>"
        self.state = {"round": -1}
        self.error: str | None = None
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Render the page if the store has a round the page does not show; True if it did."""
        r, _step, rounds, steps = last_round(self.store)
        if r == self.round:
            return False
        from . import experiment_data, render_experiment

        tmp = Path(tempfile.mkdtemp(prefix="firepbt-live-"))
        try:
            data = experiment_data(self.store)
            page = render_experiment(data, tmp).read_text()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        shown = data.steps_done // int(data.config["ready_interval"])  # (the snapshot's round)
        done = "finished" if data.finished else "running"
        banner = (f"<p id='live' class='note'>Live: round {shown} of {rounds} (step "
                  f"{data.steps_done} of {steps}), {done}; rendered "
                  f"{html.escape(time.strftime('%H:%M:%S'))}. This page reloads itself when "
                  "a round is committed.</p>")
        script = _SCRIPT.format(round=shown, ms=int(max(0.5, self.every) * 1000))
        page = page.replace("<body>", "<body>" + banner, 1).replace("</body>",
                                                                     script + "</body>", 1)
        with self._lock:
            self.html = page.encode()
            self.state = {"round": shown, "step": data.steps_done, "rounds": rounds,
                          "finished": data.finished}
            self.round = shown
        return True

    def page(self) -> tuple[bytes, bytes]:
        with self._lock:
            return self.html, json.dumps(self.state).encode()


def _handler(live: LiveReport, hosts: frozenset[str] | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # an idle connection holds its thread this long at most

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
            if hosts is not None and host not in hosts:  # another name (DNS rebinding)
                self.send_error(403, "unknown Host")
                return
            page, state = live.page()
            path = self.path.split("?")[0]
            if path in ("/", "/index.html", "/report.html"):
                body, kind = page, "text/html; charset=utf-8"
            elif path == "/state.json":
                body, kind = state, "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy", "default-src 'none'; img-src data:; "
                             "style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                             "connect-src 'self'")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a closed tab, a reset) is no error to print."""
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(store: str | Path, *, host: str = "127.0.0.1", port: int = 8000, every: float = 2.0,
          on_ready: Callable[[str], None] | None = None,
          stop: threading.Event | None = None) -> None:
    """Serve the live report of ``store`` at ``http://host:port/`` until interrupted (or until
    ``stop`` is set). ``port`` 0 takes a free one; ``on_ready(url)`` is told the address.
    ``host`` is an address to serve on (``""`` is refused: it would mean every interface); an
    address other than this machine's loopback makes the page - the store's path, settings
    and errors - reachable from the network, which a one-line warning says. Requests naming
    another Host than the address served (or this machine's loopback names) are refused: a
    page elsewhere cannot read it through a DNS name it controls."""
    from ..deadlines import MAX_SECONDS
    from ..errors import ConfigError

    if not isinstance(host, str) or not host.strip():
        raise ConfigError("host", "an address to serve on, e.g. 127.0.0.1 (this machine only)",
                          host)
    if not 0 < every <= MAX_SECONDS:
        raise ConfigError("every", f"seconds in (0, {MAX_SECONDS:g}]", every)
    live = LiveReport(store, every)
    live.refresh()  # a store that cannot be read: refused now, before anything is served
    # every interface: any name may reach it; one address: that one, and this machine's names
    hosts = None if host in ("0.0.0.0", "::") else frozenset({host.lower(), *LOOPBACK})
    server = _Server((host, port), _handler(live, hosts))
    if host not in LOOPBACK:
        import logging

        logging.getLogger("firepbt").warning(
            "the live report is served on %s, reachable from other machines: it shows the "
            "store's path, settings and errors to anyone who can reach port %d",
            host, server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://{host}:{server.server_address[1]}/"
    if on_ready is not None:
        on_ready(url)
    stop = stop or threading.Event()
    try:
        while not stop.wait(every):
            try:
                live.refresh()
            except StoreError:
                raise
            except Exception as exc:  # noqa: BLE001 - a render that fails keeps the last page
                live.error = f"{type(exc).__name__}: {exc}"
    finally:
        server.shutdown()
        server.server_close()
