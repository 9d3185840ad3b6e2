"""Fixtures of the server tests that run a real ``sam3lite serve`` process and a headless browser."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

STARTUP_SECONDS = 120  # importing torch on a busy 2-core machine takes a while
IN_CI = os.environ.get("CI", "").lower() == "true"


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen
    log: list[str] = field(default_factory=list)

    def rss_mib(self) -> float:
        """Resident memory of the server process."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


@pytest.fixture(scope="module")
def serve_process() -> Iterator[Callable[..., ServerProcess]]:
    """``start(*args)``: ``sam3lite serve ARGS`` on a free loopback port, stopped when the module ends."""
    started: list[tuple[ServerProcess, threading.Thread]] = []

    def start(*args: str) -> ServerProcess:
        command = [sys.executable, "-m", "sam3lite", "serve", *args, "--host", "127.0.0.1", "--port", "0"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("SAM3LITE_API_KEY", None)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        server = ServerProcess("", process)
        # Drain the log in a thread: a full pipe would stall the server.
        reader = threading.Thread(target=lambda: server.log.extend(iter(process.stdout.readline, "")), daemon=True)
        reader.start()
        started.append((server, reader))
        deadline = time.monotonic() + STARTUP_SECONDS
        while not server.url and time.monotonic() < deadline and process.poll() is None:
            found = [m for line in list(server.log) if (m := re.search(r"running on (http://127\.0\.0\.1:\d+)", line))]
            server.url = found[0].group(1) if found else ""
            time.sleep(0.2)
        assert server.url, "server did not start:\n" + "".join(server.log)
        return server

    try:
        yield start
    finally:
        for server, reader in started:
            server.process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
            try:
                server.process.wait(15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(5)
            reader.join(5)


@pytest.fixture()
def chromium() -> str:
    """Chromium's path (Debian's package, what .ci/run installs, else any Chromium on PATH). Without
    Chromium or Playwright the browser tests are skipped, except in CI (CI=true), where the web page
    must be tested: there they fail instead."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    missing = None
    if path is None:
        missing = "no Chromium installed (apt-get install -y chromium)"
    elif importlib.util.find_spec("playwright") is None:
        missing = "Playwright is not installed (pip install -e '.[test]')"
    if missing and IN_CI:
        pytest.fail(f"CI=true: the browser test must run, but {missing}")
    if missing:
        pytest.skip(f"browser test: {missing}")
    return path
