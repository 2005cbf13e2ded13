"""A local HTTP server for the download tests: it serves a folder on 127.0.0.1 and
records every request, so a test can see whether sdgen downloaded at all."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

from sdgen.spec import WeightFile


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder, records every request; ``/truncated/NAME`` promises more bytes
    than it sends and then closes the connection."""

    def __init__(self, *args, requests: list[str], **kwargs):
        self.requests_seen = requests
        super().__init__(*args, **kwargs)

    def do_GET(self):
        self.requests_seen.append(self.path)
        if self.path.startswith("/truncated/"):
            body = (Path(self.directory) / self.path.removeprefix("/truncated/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body) + 10_000))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, format, *args):  # keep pytest's output clean
        pass


class Server:
    def __init__(self, folder: Path):
        self.folder = folder
        self.requests: list[str] = []
        handler = functools.partial(_Handler, directory=str(folder), requests=self.requests)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def serve(self, name: str, data: bytes) -> WeightFile:
        """Serve ``data`` as ``name``; a WeightFile for it with its real hash."""
        (self.folder / name).write_bytes(data)
        return WeightFile("text_encoder", name, self.url(name), sha256(data))

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
