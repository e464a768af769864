"""A small HTTP/1.1 server for trying the README's code: `python3 examples/server.py` serves
http://127.0.0.1:8080/ until Ctrl-C (`--port`, `--host` to change it).

Standard library only, keep-alive (HTTP/1.1 with a Content-Length on every response). Every
GET answers 200 with a JSON object naming the method and path; a POST also echoes its JSON body
under "json". tests/test_readme.py runs the README's code against it.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; http.server's default is HTTP/1.0

    def do_GET(self) -> None:
        self._reply({"method": "GET", "path": self.path})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            sent = json.loads(body) if body else None
        except ValueError:
            sent = body.decode("latin-1")
        self._reply({"method": "POST", "path": self.path, "json": sent})

    def _reply(self, answer: dict[str, Any]) -> None:
        data = json.dumps(answer).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet


def make_server(host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    with make_server(args.host, args.port) as server:
        host, port = server.server_address[:2]
        print(f"serving http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
