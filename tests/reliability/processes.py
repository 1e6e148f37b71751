"""The test side of the fork server (forkserver.py): start `sclora` commands as real processes,
signal them, wait for them, read what they printed; and the moment a stage has really begun (its
output lock holds the child's pid)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sclora_tools.io.locks import lock_path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Child:
    """One forked `sclora` process."""

    server: ForkServer
    pid: int
    stdout_path: Path
    stderr_path: Path
    returncode: int | None = None

    def signal(self, number: int = signal.SIGKILL) -> None:
        try:
            os.kill(self.pid, number)
        except ProcessLookupError:
            pass  # it has exited (a zombie until it is waited for)

    def wait(self, timeout: float = 300.0) -> int:
        if self.returncode is None:
            self.returncode = self.server.wait(self.pid, timeout)
            if self.returncode is None:
                self.signal(signal.SIGKILL)
                self.returncode = self.server.wait(self.pid, 30)
                raise AssertionError(f"{self.pid} did not finish within {timeout} s; killed.\n{self.stderr}")
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.wait(self.pid, 0)
        return self.returncode

    @property
    def stdout(self) -> str:
        return printed(self.stdout_path)

    @property
    def stderr(self) -> str:
        return printed(self.stderr_path)


def printed(path: Path) -> str:
    """What a child wrote to `path` so far ("" before the child has opened it: it does so after the fork)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


class ForkServer:
    """`start(argv=[...])` runs `sclora ARGV` in a fresh forked process; `start(call="mod:fn", args=[...])` a driver."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = Path(log_dir)
        self.count = 0
        self.process = subprocess.Popen([sys.executable, "-m", "tests.reliability.forkserver"], cwd=REPO, env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        ready = self.process.stdout.readline()
        if json.loads(ready or "{}").get("ready") is not True:
            raise RuntimeError(f"the fork server did not start (it said {ready!r})")

    def request(self, message: dict) -> dict:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def start(self, argv: list[str] | None = None, *, call: str | None = None, args: tuple = (), cwd: Path | None = None,
              env: dict[str, str | None] | None = None) -> Child:
        self.count += 1
        out, err = self.log_dir / f"{self.count:04d}.out", self.log_dir / f"{self.count:04d}.err"
        message = {"op": "start", "cwd": str(cwd or REPO), "env": env or {}, "stdout": str(out), "stderr": str(err)}
        message.update({"argv": [str(a) for a in argv]} if argv is not None else {"call": call, "args": [str(a) for a in args]})
        return Child(self, self.request(message)["pid"], out, err)

    def wait(self, pid: int, timeout: float) -> int | None:
        return self.request({"op": "wait", "pid": pid, "timeout": timeout})["returncode"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def holds_lock(child: Child, output: Path) -> bool:
    """Whether `child` holds the lock of `output` (the lock file names its holder's pid)."""
    try:
        return lock_path(output).read_text().strip() == str(child.pid)
    except OSError:
        return False


def wait_until_started(child: Child, output: Path, timeout: float = 120.0) -> bool:
    """Block until `child` holds the output's lock (True), or has exited first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if holds_lock(child, output):
            return True
        if child.poll() is not None:
            return False
        time.sleep(0.002)
    raise AssertionError(f"process {child.pid} never took the lock of {output}:\n{child.stderr}")
