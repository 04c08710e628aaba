"""A real local webhook that alerts are sent to in the tests: what arrived, as it arrived.

apprise's `json://HOST:PORT/PATH` POSTs {"version", "title", "message", "type", ...}. A
receiver made with keep=True (the real task runs of the integration tests) also writes the
latest alert of each event, raw, to /tmp/alerts-received/<event>.json (the closing note
quotes them).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SAVED = Path("/tmp/alerts-received")


class Received:
    """The alerts a receiver got, in order of arrival."""

    def __init__(self, keep: bool = False) -> None:
        self.raw: list[bytes] = []
        self.lock = threading.Lock()
        self.keep = keep

    def add(self, body: bytes) -> None:
        with self.lock:
            self.raw.append(body)
        if self.keep:
            SAVED.mkdir(parents=True, exist_ok=True)
            (SAVED / f"{event_of(json.loads(body))}.json").write_bytes(body)

    @property
    def alerts(self) -> list[dict]:
        with self.lock:
            return [json.loads(body) for body in self.raw]

    def of(self, event: str) -> list[dict]:
        return [a for a in self.alerts if event_of(a) == event]


def event_of(alert: dict) -> str:
    """The event an alert is about: its body's first line, `event: NAME`."""
    first = alert.get("message", "").splitlines()[0] if alert.get("message") else ""
    return first.removeprefix("event: ").strip() or "unknown"


@contextmanager
def alert_receiver(status: int = 200, keep: bool = False) -> Iterator[tuple[str, Received]]:
    """A webhook on a free local port answering `status`; yields (apprise URL, Received)."""
    received = Received(keep)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if status == 200:
                received.add(body)
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"json://127.0.0.1:{server.server_address[1]}/alerts", received
    finally:
        server.shutdown()
        server.server_close()


def connection_env(url: str) -> dict[str, str]:
    """The environment variable that turns alerts on, sending to `url`."""
    config = {"conn_type": "apprise", "extra": {"config": {"path": url}}}
    return {"AIRFLOW_CONN_DRIFTLINE_ALERTS": json.dumps(config)}
