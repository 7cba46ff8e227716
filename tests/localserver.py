"""Test helpers: an HTTP server on 127.0.0.1 and the small state dict it serves."""

from __future__ import annotations

import collections
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def small_state() -> "OrderedDict[str, np.ndarray]":
    rng = np.random.default_rng(0)
    return OrderedDict(
        [
            ("conv.weight", rng.normal(size=(4, 3, 3, 3)).astype(np.float32)),
            ("conv.bias", rng.normal(size=(1, 4, 1, 1)).astype(np.float32)),
            ("bn.running_mean", rng.normal(size=(1, 4, 1, 1)).astype(np.float32)),
        ]
    )


class LocalWeightsServer:
    """An HTTP server on 127.0.0.1 (ephemeral port) in a thread, counting requests per path.

    files: path -> body, served normally. truncated: path -> body, served with a
    Content-Length 1000 bytes larger than the body. stalled: paths that answer nothing
    until the server is closed, so a client timeout is the only way out whatever the
    machine's speed. Anything else is a 404.
    """

    def __init__(self):
        self.files = {}
        self.truncated = {}
        self.stalled = set()
        self.requests = collections.Counter()
        self.closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                self._answer(send_body=True)

            def do_HEAD(self):  # noqa: N802
                self._answer(send_body=False)

            def _answer(self, send_body: bool):
                server.requests[self.path] += 1
                if self.path in server.stalled:
                    server.closing.wait()
                    return
                body = server.files.get(self.path, server.truncated.get(self.path))
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                claimed = len(body) + (1000 if self.path in server.truncated else 0)
                self.send_header("Content-Length", str(claimed))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if send_body:
                    self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> "LocalWeightsServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
