"""Shared helpers of the bench scripts: servers on one core, clients on the other.

Not a benchmark itself. The bench scripts run as ``python bench/bench_X.py``, so this
module is importable as ``_harness`` from their directory.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

KEY = "bench-key"
#: The emulator (or sink) runs here; everything measured runs on CLIENT_CORE.
SERVER_CORE = 0
CLIENT_CORE = 1
PYTHON = sys.executable


def two_cores() -> bool:
    return len(os.sched_getaffinity(0)) >= 2


def pin_to(core: int | None) -> Any:
    """A preexec_fn that pins the child to ``core`` before it runs anything."""
    if core is None or not two_cores():
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {core})

    return pin


def machine() -> dict[str, Any]:
    """What the figures were measured on (and the children's bytecode written first:
    `warm_bytecode`)."""
    warm_bytecode()
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "load_before": round(os.getloadavg()[0], 2),
        "pinned": two_cores(),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """A running emulator (or sink) process and its URLs."""

    proc: subprocess.Popen[str]
    root: str
    kind: str

    @property
    def base_url(self) -> str:
        return self.root + "/raven"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.root + "/_emulator/stats", timeout=30) as resp:
            result: dict[str, Any] = orjson.loads(resp.read())
        return result

    def messages(self) -> list[dict[str, Any]]:
        """Every message the emulator accepted (its ledger must be ``full``)."""
        with urllib.request.urlopen(self.root + "/_emulator/messages", timeout=60) as resp:
            return [orjson.loads(line) for line in resp.read().splitlines() if line]

    def reset(self) -> None:
        request = urllib.request.Request(self.root + "/_emulator/reset", method="POST")
        with urllib.request.urlopen(request, timeout=30) as resp:
            resp.read()

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_emulator(*args: str, ledger: str = "counts", rate_limit: bool = False) -> Server:
    """``dispatcher gateway`` on SERVER_CORE; returns once it listens."""
    cmd = [PYTHON, "-m", "dispatcher", "gateway", "--port", "0", "--api-key", KEY]
    cmd += ["--ledger", ledger, *args]
    if not rate_limit:
        cmd.append("--no-rate-limit")
    return _start(cmd, "emulator")


def start_sink() -> Server:
    """The minimal sink of ``bench/_sink.py`` on SERVER_CORE."""
    here = os.path.dirname(os.path.abspath(__file__))
    return _start([PYTHON, os.path.join(here, "_sink.py")], "sink")


def _start(cmd: list[str], kind: str) -> Server:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=pin_to(SERVER_CORE))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"{kind} did not start: {line!r}")
    return Server(proc, line.removeprefix("listening on ").strip(), kind)


@dataclass
class Finished:
    """A child process that ran to its end: exit code, wall time, peak RSS, output."""

    returncode: int
    wall_s: float
    max_rss_mib: float
    cpu_s: float
    stdout: bytes
    stderr: bytes


def run_child(
    cmd: Sequence[str],
    *,
    core: int | None = CLIENT_CORE,
    env: dict[str, str] | None = None,
    stdin: Any = None,
    timeout: float = 3600,
) -> Finished:
    """Run ``cmd`` pinned to ``core``, timed from outside; peak RSS from wait4's rusage."""
    warm_bytecode()
    start = time.perf_counter()
    # Not the caller's directory: `python -m dispatcher` puts the current directory
    # first on sys.path, so a bench run from a checkout would measure that checkout's
    # code whatever PYTHONPATH names (the way to measure another version).
    proc = subprocess.Popen(
        list(cmd),
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tempfile.gettempdir(),
        preexec_fn=pin_to(core),
    )
    # communicate() would reap the child itself and lose its rusage: read the pipes on
    # threads, reap with wait4.
    out: dict[str, bytes] = {}

    def drain(name: str, stream: Any) -> None:
        out[name] = stream.read()

    threads = [
        threading.Thread(target=drain, args=("stdout", proc.stdout)),
        threading.Thread(target=drain, args=("stderr", proc.stderr)),
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.002)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in threads:
        t.join()
    return Finished(
        returncode=proc.returncode,
        wall_s=wall,
        max_rss_mib=usage.ru_maxrss / 1024,
        cpu_s=usage.ru_utime + usage.ru_stime,
        stdout=out.get("stdout", b""),
        stderr=out.get("stderr", b""),
    )


_warmed: set[str] = set()


def warm_bytecode() -> None:
    """Write the bytecode of the dispatcher that the children import — each tree named
    by PYTHONPATH (another version to measure) and this checkout — before anything is
    timed, as an installed copy has it.

    Without it, a machine with PYTHONDONTWRITEBYTECODE set (or a tree never imported
    before) compiles every module from source in every child: ~55 ms more start-up for
    a send with an opt-out list and dedupe than without, which no user pays twice.
    Existing bytecode is read whatever that variable says; `compileall` writes it
    whatever it says, and only where a source is newer."""
    import compileall

    roots = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    roots.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for root in roots:
        package = os.path.join(os.path.abspath(root), "dispatcher")
        if package not in _warmed and os.path.isdir(package):
            compileall.compile_dir(package, quiet=1)
            _warmed.add(package)


def env_with_key() -> dict[str, str]:
    env = dict(os.environ)
    env["DISPATCHER_API_KEY"] = KEY
    return env


def gen_file(path: str, count: int, seed: int = 1) -> None:
    """``dispatcher gen --count N`` written to ``path`` (kept when it already exists)."""
    if os.path.exists(path) and os.path.getsize(path) > 0:
        with open(path + ".count") as f:
            if f.read().strip() == f"{count} {seed}":
                return
    with open(path, "wb") as f:
        subprocess.run(
            [PYTHON, "-m", "dispatcher", "gen", "--count", str(count), "--seed", str(seed)],
            stdout=f,
            check=True,
        )
    with open(path + ".count", "w") as f:
        f.write(f"{count} {seed}")


def emit(document: dict[str, Any]) -> None:
    """Print the one JSON object a bench script ends with."""
    sys.stdout.write(orjson.dumps(document).decode() + "\n")
    sys.stdout.flush()


def workdir(given: str | None, prefix: str) -> str:
    """The user's ``--workdir`` as an absolute path (the children run elsewhere: see
    `run_child`), else a new temporary directory."""
    return os.path.abspath(given) if given else tempfile.mkdtemp(prefix=prefix)
