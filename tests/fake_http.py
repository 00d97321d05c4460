"""A JSON-over-HTTP server on 127.0.0.1 for the tests of API clients (judges, trait generation,
sampling engines): real sockets, real HTTP, nothing leaves the machine."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Respond = Callable[[str, dict[str, Any], int], tuple[int, Any]]
"""``respond(path, body, n)`` -> ``(status, payload)``; ``n`` counts requests from 1. A payload
that is a ``str`` with a status other than 200 is sent as an HTTP error with that message."""


class JsonServer:
    """Answers every ``POST`` with ``respond``; records each request's path, lower-cased headers
    and JSON body in ``requests``. ``url`` is the ``/v1`` root clients are pointed at."""

    def __init__(self, respond: Respond) -> None:
        self.requests: list[dict[str, Any]] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with lock:
                    outer.requests.append({"path": self.path, "headers": headers, "body": body})
                    n = len(outer.requests)
                code, payload = respond(self.path, body, n)
                if code != 200 and isinstance(payload, str):
                    self.send_error(code, payload)
                    return
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.root = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.url = self.root + "/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of the requests so far, in arrival order."""
        return [r["body"] for r in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
