"""The service's status over HTTP on localhost (the standard library's ``http.server``), JSON only, read-only:

- ``GET /health``: ``{"status": "ok"|"starting"|"worker lost", "worker": ..., "queue": {state: count}}``
  (status 200 when ok, 503 otherwise, so a load balancer or systemd watchdog can use it);
- ``GET /jobs``: the latest jobs (``?state=failed`` to filter, ``?limit=N``);
- ``GET /jobs/<id>``: one job, with its stage times.

It shows UIDs, states, reasons and times, never patient names.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from pipeline.serve.jobs import STATES, JobQueue


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``PORT`` (on 127.0.0.1) for ``--http``.

    Raises:
        ValueError: not that form.
    """
    host, _, port = str(text).rpartition(":")
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--http {text!r}: give HOST:PORT, e.g. 127.0.0.1:8080")
    return host or "127.0.0.1", int(port)


class StatusServer:
    """Serves the queue's state and ``health()`` over HTTP in a background thread.

    Args:
        queue: the job queue.
        health: returns the service's health fields (``status`` among them).
        host, port: where to listen (port 0: a free one, see :attr:`port`).
    """

    def __init__(self, queue: JobQueue, health: Callable[[], dict[str, Any]], host: str = "127.0.0.1",
                 port: int = 8080) -> None:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                code, body = service.respond(self.path)
                data = json.dumps(body, indent=1).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
                pass

        self.queue = queue
        self.health = health
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="serve-status", daemon=True)

    @property
    def port(self) -> int:
        """The port listened on."""
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def respond(self, path: str) -> tuple[int, Any]:
        """The status code and JSON body for a request path."""
        url = urlparse(path)
        parts = [p for p in url.path.split("/") if p]
        if parts == ["health"]:
            body = {**self.health(), "queue": self.queue.counts()}
            return (200 if body.get("status") == "ok" else 503), body
        if parts == ["jobs"]:
            query = parse_qs(url.query)
            states = tuple(s for s in query.get("state", []) if s in STATES) or STATES
            try:
                limit = max(1, min(1000, int(query.get("limit", ["100"])[0])))
            except ValueError:
                return 400, {"error": "limit must be a number"}
            return 200, [job.as_dict() for job in self.queue.jobs(states, limit)]
        if len(parts) == 2 and parts[0] == "jobs" and parts[1].isdigit():
            job = self.queue.get(int(parts[1]))
            return (200, job.as_dict()) if job else (404, {"error": f"no job {parts[1]}"})
        return 404, {"error": "unknown path: /health, /jobs, /jobs/<id>"}
