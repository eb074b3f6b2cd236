"""The live report's server (firepbt.report.live.serve): where it listens, whom it answers, and
that a client hanging up or lingering costs it nothing. The page itself in a browser:
tests/test_tracking.py."""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time

import pytest

from firepbt.api import run
from firepbt.config import ExperimentConfig
from firepbt.errors import ConfigError
from firepbt.report.live import serve


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("live") / "s"
    run(ExperimentConfig(task="nqm", method="pbt", workers=4, steps=40, ready_interval=20,
                         eval_interval=10, task_options={"dims": 50}, executor="local",
                         threads=1), path, progress=False)
    return path


class Served:
    def __init__(self, store, host="127.0.0.1"):
        self.stop = threading.Event()
        self.url: str | None = None
        ready = threading.Event()

        def on_ready(url):
            self.url = url
            ready.set()

        self.errors: list[BaseException] = []

        def target():
            try:
                serve(store, host=host, port=0, every=0.2, on_ready=on_ready, stop=self.stop)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(exc)
                ready.set()

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        assert ready.wait(60) and not self.errors, self.errors
        self.port = int(self.url.rsplit(":", 1)[1].strip("/"))

    def get(self, path="/", host=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {} if host is None else {"Host": host}
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        out = (resp.status, dict(resp.getheaders()), resp.read())
        conn.close()
        return out

    def close(self):
        self.stop.set()
        self.thread.join(30)


def test_an_empty_host_is_refused_rather_than_serving_every_interface(store):
    with pytest.raises(ConfigError, match="host must be an address to serve on"):
        serve(store, host="", port=0, stop=threading.Event())
    with pytest.raises(ConfigError, match=r"every must be seconds in \(0, 1e\+09\]"):
        serve(store, port=0, every=1e300, stop=threading.Event())


def test_every_interface_is_served_only_with_a_warning(store, caplog):
    with caplog.at_level(logging.WARNING, logger="firepbt"):
        served = Served(store, host="0.0.0.0")
    try:
        assert served.get()[0] == 200
    finally:
        served.close()
    assert any("reachable from other machines" in r.message for r in caplog.records)


def test_a_page_under_another_host_name_is_refused_and_headers_forbid_sniffing(store):
    served = Served(store)
    try:
        status, headers, body = served.get()
        assert status == 200 and b"firepbt report" in body
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert served.get(host="localhost")[0] == 200
        assert served.get(host="attacker.example")[0] == 403  # a DNS name pointed here
    finally:
        served.close()


def test_a_client_that_hangs_up_or_lingers_costs_the_server_nothing(store, capfd):
    served = Served(store)
    try:
        for _ in range(5):  # ask, then reset the connection before reading
            s = socket.create_connection(("127.0.0.1", served.port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        idle = socket.create_connection(("127.0.0.1", served.port))  # says nothing at all
        time.sleep(0.5)
        assert served.get()[0] == 200  # still served beside the idle one
        idle.settimeout(30)
        assert idle.recv(1) == b""  # and the idle one is let go (closed by the server)
        idle.close()
    finally:
        served.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err
