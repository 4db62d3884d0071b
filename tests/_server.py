"""Start `vitkit serve` in a subprocess on a free loopback port, and talk to it with bounded requests."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A running `vitkit serve` process (its own process group) and a small HTTP client for it."""

    def __init__(self, model: str, *flags: str, timeout: float = 90) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        self.proc = subprocess.Popen([sys.executable, "-m", "vitkit", "serve", model, "--port", str(self.port),
                                      *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self.startup_statuses: list[int] = []  # what /health answered until it said 200
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vitkit serve exited with {self.proc.returncode}: {self.output()}")
            try:
                self.startup_statuses.append(self.request("GET", "/health", timeout=2)[0])
                if self.startup_statuses[-1] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"vitkit serve was not healthy within {timeout} s: {self.output()}")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 30) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def post_image(self, path: str, data: bytes, *, content_type: str = "image/jpeg",
                   timeout: float = 30) -> tuple[int, Any]:
        status, body = self.request("POST", path, data, {"Content-Type": content_type}, timeout=timeout)
        return status, json.loads(body)

    def post_form(self, path: str, fields: dict[str, tuple[str | None, bytes]]) -> tuple[int, Any]:
        """A multipart form: each field a file (a file name given) or a text field (None, as curl's -F k=v)."""
        boundary = "vitkit-test-boundary"
        parts = b"".join((f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{fname}"\r\n'
                          f"Content-Type: application/octet-stream\r\n\r\n" if fname is not None else
                          f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n').encode()
                         + data + b"\r\n" for name, (fname, data) in fields.items())
        body = parts + f"--{boundary}--\r\n".encode()
        status, out = self.request("POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return status, json.loads(out)

    def output(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stdout.read().decode(errors="replace")[-4000:]

    def stop(self) -> int:
        """SIGTERM (the server's own clean stop), SIGKILL to its process group if it is not gone in 20 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(timeout=30)
