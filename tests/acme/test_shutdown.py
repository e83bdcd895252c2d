"""SIGTERM or Ctrl-C while an ACME request hangs: the gateway exits at once, not after the
request's timeout (the ACME library blocks in a daemon thread of its own)."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
import trustme

from tests.acme.gateway_process import Listeners, acme_env, gateway, wait_until


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_hanging_acme_request_exits_promptly(
    signum: signal.Signals, tmp_path: Path
) -> None:
    silent = socket.socket()  # accepts connections (the backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    directory = f"https://127.0.0.1:{silent.getsockname()[1]}/dir"
    listeners = Listeners()
    env = acme_env(tmp_path / "state", directory, ca_file, "memory.test", *listeners.ports)
    try:
        with gateway(env, tmp_path / "gateway.log", listeners) as running:
            wait_until(
                lambda: "requesting a certificate" in running.log_text(), 20,
                "the first order", running,
            )  # fmt: skip
            time.sleep(0.5)  # inside the 10 s request timeout now
            started = time.monotonic()
            running.process.send_signal(signum)
            code = running.process.wait(timeout=8)
            elapsed = time.monotonic() - started
            log = running.log_text()
            assert elapsed < 5, f"exit took {elapsed:.1f} s:\n{log}"
            assert code in (0, -signum, 130), log  # uvicorn re-raises the signal
            assert "could not obtain" not in log  # it was still waiting
            assert "Traceback" not in log
    finally:
        silent.close()
