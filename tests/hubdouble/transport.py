"""The HTTP plumbing of the Hub test double: a threaded stdlib server whose handler records every
request, hands it to the hub, and turns errors into the answers the real Hub gives."""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from .storage import HttpError, RequestRecord


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(obj: Any, status: int = 200, headers: dict | None = None, content_type: str = "application/json") -> Response:
    return Response(status, json.dumps(obj).encode(), {"Content-Type": content_type, **(headers or {})})


def truthy(values: list[str] | None) -> bool:
    """A query flag such as `?recursive=true`."""
    return bool(values) and values[-1].lower() in ("1", "true", "yes", "on")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    timeout = 60  # idle keep-alive connections are dropped after that

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature; silences stderr logging
        pass

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.dispatch("GET")

    def do_HEAD(self):  # noqa: N802 - http.server's naming
        self.dispatch("HEAD")

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.dispatch("POST")

    def do_PUT(self):  # noqa: N802 - http.server's naming
        self.dispatch("PUT")

    def do_DELETE(self):  # noqa: N802 - http.server's naming
        self.dispatch("DELETE")

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def read_chunked(self) -> bytes:
        chunks = []
        while True:
            size_line = self.rfile.readline()
            if not size_line:
                break
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # CRLF after each chunk
        return b"".join(chunks)

    def dispatch(self, method: str) -> None:
        hub = self.server.hub  # type: ignore[attr-defined]
        split = urlsplit(self.path)
        record = RequestRecord(method=method, path=split.path, query=split.query, body=self.read_body(),
                               headers={k.lower(): v for k, v in self.headers.items()}, host=self.headers.get("Host", ""))
        hub.record(record)
        try:
            response = hub.handle(record)
        except HttpError as err:
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.error_code:
                headers["X-Error-Code"] = err.error_code
            response = json_response({"error": err.message}, status=err.status, headers=headers)
        except Exception:  # noqa: BLE001 - a bug in the test double: answer 500 and report it at teardown
            tb = traceback.format_exc()
            hub.internal_errors.append(f"{method} {self.path}\n{tb}")
            response = json_response({"error": "FakeHub internal error", "traceback": tb}, status=500)
        record.status = response.status
        try:
            self.send(response, head=(method == "HEAD"))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout the test injected): nobody is left to answer

    def send(self, response: Response, head: bool) -> None:
        self.send_response(response.status)
        headers = dict(response.headers)
        headers.setdefault("Content-Length", str(len(response.body)))
        for key, value in headers.items():
            # http.server writes headers as latin-1: keep them ASCII (paths may be unicode)
            self.send_header(key, str(value).encode("ascii", "backslashreplace").decode("ascii"))
        self.end_headers()
        if not head and response.body:
            self.wfile.write(response.body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
