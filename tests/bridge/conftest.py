"""Helpers for bridge tests: free loopback ports and policy-server processes (real sockets only)."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class ServerProcess:
    """`python -m bridge.serve` in its own process (so it can be killed with -9)."""

    def __init__(self, endpoint: str, *args: str) -> None:
        self.endpoint, self.args = endpoint, args
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServerProcess":
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge.serve", "--endpoint", self.endpoint, *self.args],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        line = self.proc.stdout.readline()  # "serving <policy> at <endpoint>" once bound
        assert line.startswith("serving"), f"policy server did not start: {line!r}"
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def server_process():
    started: list[ServerProcess] = []

    def make(endpoint: str, *args: str) -> ServerProcess:
        started.append(ServerProcess(endpoint, *args).start())
        return started[-1]

    yield make
    for s in started:
        s.kill()


def wait_for(predicate, timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
