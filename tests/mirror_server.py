"""A real local HTTP server serving a dataset root as the released data's mirror layout.

``<url>/public/<path>`` and ``<url>/private/<path>`` both serve ``<root>/<path>`` (a sample
dataset root holds both splits), honouring ``Range: bytes=N-`` (206 + Content-Range) and
optionally sending ``Content-MD5``. Faults are queued per URL path and used one per request:

- ``drop``: announce the whole body, send half of it, close the connection;
- ``corrupt-header``: send the right length of zeros (not a TIFF at all);
- ``flip``: flip one byte in the middle (decodes fine; only an MD5 can tell);
- ``truncate``: announce and send only the first half (a short file served consistently);
- ``503``: answer 503 Service Unavailable;
- ``hangup``: close the connection without an answer (as a host going away).

Every request is logged as ``(path, range header or None)``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PREFIX = "/final"
SPLIT_FOLDERS = ("public", "private")


class MirrorHandler(BaseHTTPRequestHandler):
    server: MirrorServer

    def log_message(self, format: str, *args) -> None:
        pass

    def _file(self) -> Path | None:
        parts = self.path.split("?", 1)[0].split("/")
        if "/".join(parts[:2]) != PREFIX or len(parts) < 4 or parts[2] not in SPLIT_FOLDERS:
            return None
        path = self.server.root.joinpath(*parts[3:])
        return path if ".." not in parts and path.is_file() else None

    def do_GET(self) -> None:
        range_header = self.headers.get("Range")
        with self.server.lock:
            self.server.requests.append((self.path, range_header))
            queue = self.server.faults.get(self.path)
            fault = queue.pop(0) if queue else None
        path = self._file()
        if path is None:
            self.send_error(404)
            return
        if fault == "hangup":
            self.close_connection = True
            return
        if fault == "503":
            self.send_error(503)
            return
        original = path.read_bytes()
        self._send(original, self._faulty(original, fault), range_header, fault == "drop")

    @staticmethod
    def _faulty(data: bytes, fault: str | None) -> bytes:
        if fault == "corrupt-header":
            return bytes(len(data))
        if fault == "flip":
            middle = len(data) // 2
            return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        if fault == "truncate":
            return data[: len(data) // 2]
        return data

    def _send(self, original: bytes, data: bytes, range_header: str | None, drop: bool) -> None:
        """Answer with ``data`` (from the range's start); an MD5 is of ``original``'s bytes."""
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match:
            start = int(match[1])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        if self.server.send_md5:
            digest = hashlib.md5(original[start:]).digest()
            self.send_header("Content-MD5", base64.b64encode(digest).decode())
        self.end_headers()
        if drop:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class MirrorServer(ThreadingHTTPServer):
    """The server; ``url`` is the base URL to pass as ``--base-url``."""

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), MirrorHandler)
        self.root = Path(root)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str | None]] = []
        self.faults: dict[str, list[str]] = defaultdict(list)
        self.send_md5 = False
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{PREFIX}"

    def path_of(self, split: str, relative: str) -> str:
        """The URL path a file is requested under."""
        return f"{PREFIX}/{'public' if split == 'train' else 'private'}/{relative}"

    def requests_for(self, split: str, relative: str) -> list[str | None]:
        """The Range headers of the requests for one file."""
        path = self.path_of(split, relative)
        with self.lock:
            return [range_header for p, range_header in self.requests if p == path]

    def __enter__(self) -> MirrorServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
