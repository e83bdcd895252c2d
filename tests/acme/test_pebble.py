"""Certificates from a real ACME server (Pebble) on loopback: issuance, restart, renewal
under an open connection, the server down at start-up, a name that fails validation, and
two replicas sharing the state directory."""

from __future__ import annotations

import http.client
import json
import re
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.acme.dns import LoopbackDNS
from tests.acme.gateway_process import (
    Listeners,
    acme_env,
    gateway,
    peer_certificate,
    wait_for_issued,
    wait_until,
)
from tests.acme.pebble import make_api_ca, pebble, require_pebble
from tests.ports import reserved_port

pytestmark = pytest.mark.pebble

NAME = "memory.test"


@pytest.fixture
def pebble_binary() -> str:
    return require_pebble()


@pytest.fixture
def dns() -> Iterator[LoopbackDNS]:
    with LoopbackDNS([NAME, "replica.test"]) as server:
        yield server


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_issuance_then_restart_without_reissue(
    pebble_binary: str, dns: LoopbackDNS, tmp_path: Path
) -> None:
    listeners = Listeners()
    https_port, http_port = listeners.ports
    with pebble(pebble_binary, tmp_path / "pebble", http_port=http_port, dns_port=dns.port) as ca:
        env = acme_env(tmp_path / "state", ca.directory, ca.api_ca, NAME, https_port, http_port)
        metrics_port = reserved_port()
        env["MCP_GATEWAY_METRICS_ADDR"] = f"127.0.0.1:{metrics_port}"
        verify = ca.client_context()
        with gateway(env, tmp_path / "gateway.log", listeners) as running:
            first = wait_for_issued(running, NAME, verify)
            scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            assert 'mcp_gateway_certificate_events_total{event="issued"} 1.0' in scraped
            elapsed = time.monotonic() - running.started
            print(f"\ntime to first certificate (process start to verified handshake): "
                  f"{elapsed:.2f} s")  # fmt: skip
            log = running.log_text()
            reason = "(only the placeholder certificate is served)"
            assert f"ACME: requesting a certificate for memory.test {reason}" in log
            assert "obtained in" in log
            # Ordered only once both listeners accept (HTTP-01 arrives on one of them).
            assert log.index("Application startup complete") < log.index("ACME: requesting")
            # The issuer follows the first ACME domain.
            with httpx.Client(verify=verify) as client:
                url = f"https://127.0.0.1:{https_port}"
                meta = client.get(
                    f"{url}/.well-known/oauth-authorization-server",
                    headers={"host": NAME},
                    extensions={"sni_hostname": NAME},
                ).json()
            assert meta["issuer"] == f"https://{NAME}"
            # Plain HTTP still redirects everything that is not a challenge.
            redirect = httpx.get(f"http://127.0.0.1:{http_port}/mcp", headers={"host": NAME})
            assert redirect.status_code == 308
            assert redirect.headers["location"] == f"https://{NAME}:{https_port}/mcp"
            missing = httpx.get(f"http://127.0.0.1:{http_port}/.well-known/acme-challenge/nope")
            assert missing.status_code == 404
        acme_dir = tmp_path / "state" / "acme"
        assert _mode(acme_dir) == 0o700
        for path in [acme_dir / "certificate.pem", acme_dir / "certificate.json",
                     *(acme_dir / "accounts").iterdir()]:  # fmt: skip
            assert _mode(path) == 0o600, path
        assert not list((acme_dir / "challenges").iterdir())  # tokens withdrawn

        with gateway(env, tmp_path / "gateway-2.log") as again:
            wait_until(lambda: peer_certificate(https_port, NAME, verify), 20, "restart", again)
            assert peer_certificate(https_port, NAME, verify).serial_number == first.serial_number
            time.sleep(1.5)  # the manager has looked at the stored certificate by now
            log = again.log_text()
            assert "requesting a certificate" not in log
            assert "ACME account registered" not in log  # the account is reused too


def test_renewal_swaps_in_under_an_open_connection(
    pebble_binary: str, dns: LoopbackDNS, tmp_path: Path
) -> None:
    listeners = Listeners()
    https_port, http_port = listeners.ports
    with pebble(
        pebble_binary, tmp_path / "pebble", http_port=http_port, dns_port=dns.port,
        validity_seconds=15,
    ) as ca:  # fmt: skip
        env = acme_env(tmp_path / "state", ca.directory, ca.api_ca, NAME, https_port, http_port)
        verify = ca.client_context()
        with gateway(env, tmp_path / "gateway.log", listeners) as running:
            first = wait_for_issued(running, NAME, verify)
            connection = _NamedConnection("127.0.0.1", https_port, context=verify, timeout=10)
            connection.request("GET", "/healthz", headers={"host": NAME})
            assert connection.getresponse().read() == b'{"status": "ok"}'
            held = connection.sock
            assert held is not None

            def renewed() -> bool:
                cert = peer_certificate(https_port, NAME, verify)
                return cert.serial_number != first.serial_number

            # A third of 15 s left: renewal about 10 s after issuance.
            wait_until(renewed, 30, "the renewed certificate", running)
            assert "(a third of its lifetime left)" in running.log_text()
            # The connection opened before the swap is still served, on the same socket.
            for _ in range(3):
                connection.request("GET", "/healthz", headers={"host": NAME})
                assert connection.getresponse().read() == b'{"status": "ok"}'
            assert connection.sock is held
            connection.close()


class _NamedConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1, verifying the certificate for NAME (SNI and host name check)."""

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=NAME)  # type: ignore[attr-defined]


def test_acme_server_down_at_startup_is_retried(
    pebble_binary: str, dns: LoopbackDNS, tmp_path: Path
) -> None:
    listeners = Listeners()
    (https_port, http_port), acme_port = listeners.ports, reserved_port()
    api = make_api_ca(tmp_path)
    directory = f"https://127.0.0.1:{acme_port}/dir"
    env = acme_env(tmp_path / "state", directory, api.ca_file, NAME, https_port, http_port)
    with gateway(env, tmp_path / "gateway.log", listeners) as running:
        wait_until(
            lambda: "cannot reach the ACME server" in running.log_text(), 20,
            "the first failure", running,
        )  # fmt: skip
        log = running.log_text()
        assert f"cannot reach the ACME server {directory}: [Errno 111] Connection refused" in log
        assert "still serving the placeholder" in log
        assert "Traceback" not in log
        placeholder = peer_certificate(https_port, NAME)  # the listener is up meanwhile
        assert "placeholder" in placeholder.subject.rfc4514_string()
        with pebble(
            pebble_binary, tmp_path / "pebble", http_port=http_port, dns_port=dns.port,
            api=api, listen_port=acme_port,
        ) as ca:  # fmt: skip
            issued = wait_for_issued(running, NAME, ca.client_context(), timeout=60)
            assert issued.serial_number != placeholder.serial_number
        assert running.alive()


def test_a_domain_that_fails_validation(
    pebble_binary: str, dns: LoopbackDNS, tmp_path: Path
) -> None:
    listeners = Listeners()
    https_port, http_port = listeners.ports
    with pebble(pebble_binary, tmp_path / "pebble", http_port=http_port, dns_port=dns.port) as ca:
        names = f"{NAME},unknown.test"  # the loopback DNS answers NXDOMAIN for the second
        env = acme_env(tmp_path / "state", ca.directory, ca.api_ca, names, https_port, http_port)
        metrics_port = reserved_port()
        env["MCP_GATEWAY_METRICS_ADDR"] = f"127.0.0.1:{metrics_port}"
        with gateway(env, tmp_path / "gateway.log", listeners) as running:
            wait_until(
                lambda: running.log_text().count("validation failed") >= 2, 30,
                "two failed attempts", running,
            )  # fmt: skip
            log = running.log_text()
            line = next(x for x in log.splitlines() if "validation failed" in x)
            assert "could not obtain a certificate for memory.test, unknown.test" in line
            assert "unknown.test:" in line.split("validation failed", 1)[1]
            assert "(attempt 1, next in 1 s; still serving the placeholder)" in line
            assert "(attempt 2, next in 2 s;" in log
            assert "Traceback" not in log
            assert "placeholder" in peer_certificate(https_port, NAME).subject.rfc4514_string()
            scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            failed = re.search(
                r'mcp_gateway_certificate_events_total\{event="failed"\} ([0-9.]+)', scraped
            )
            assert failed is not None
            assert float(failed.group(1)) >= 2
            assert 'event="issued"' not in scraped
            assert running.alive()
        assert "unknown.test" in dns.queries
        # The replicas' shared backoff survives the process.
        backoff = json.loads((tmp_path / "state" / "acme" / "backoff.json").read_text())
        assert backoff["failures"] >= 2


def test_two_replicas_share_one_certificate(
    pebble_binary: str, dns: LoopbackDNS, tmp_path: Path
) -> None:
    """Both replicas start together on one state directory: one certificate is issued
    and both serve it. Pebble validates on the first replica's HTTP port; whichever
    replica holds the lock and orders, the token is in the shared directory, so the first
    one answers it (if the second orders before the first listens, that attempt fails
    and is retried, which is what a load balancer in front of replicas also sees)."""
    listeners = [Listeners(), Listeners()]
    ports = [each.ports for each in listeners]
    with pebble(pebble_binary, tmp_path / "pebble", http_port=ports[0][1], dns_port=dns.port) as ca:
        verify = ca.client_context()
        envs = [
            acme_env(tmp_path / "state", ca.directory, ca.api_ca, NAME, https, http)
            for https, http in ports
        ]
        with (
            gateway(envs[0], tmp_path / "a.log", listeners[0]) as first,
            gateway(envs[1], tmp_path / "b.log", listeners[1]) as second,
        ):
            a = wait_for_issued(first, NAME, verify)
            b = wait_for_issued(second, NAME, verify, timeout=60)
            assert a.serial_number == b.serial_number
            logs = first.log_text() + second.log_text()
            assert logs.count("obtained in") == 1
            accounts = list((tmp_path / "state" / "acme" / "accounts").iterdir())
            assert len(accounts) == 1
            assert json.loads(accounts[0].read_text())["url"].startswith("https://127.0.0.1")


def test_renewal_failure_keeps_the_old_certificate(
    pebble_binary: str, dns: LoopbackDNS, tmp_path: Path
) -> None:
    listeners = Listeners()
    https_port, http_port = listeners.ports
    with pebble(
        pebble_binary, tmp_path / "pebble", http_port=http_port, dns_port=dns.port,
        validity_seconds=30,
    ) as ca:  # fmt: skip
        env = acme_env(tmp_path / "state", ca.directory, ca.api_ca, NAME, https_port, http_port)
        verify = ca.client_context()
        with gateway(env, tmp_path / "gateway.log", listeners) as running:
            first = wait_for_issued(running, NAME, verify)
            connection = _NamedConnection("127.0.0.1", https_port, context=verify, timeout=10)
            connection.request("GET", "/healthz", headers={"host": NAME})
            assert connection.getresponse().read() == b'{"status": "ok"}'
            ca.process.terminate()  # the CA goes away before renewal is due (20 s)
            ca.process.wait(timeout=10)
            wait_until(
                lambda: "could not obtain" in running.log_text(), 40,
                "the failed renewal", running,
            )  # fmt: skip
            line = next(x for x in running.log_text().splitlines() if "could not obtain" in x)
            assert f"still serving serial {first.serial_number:x}" in line
            assert "cannot reach the ACME server" in line
            again = peer_certificate(https_port, NAME, verify)
            assert again.serial_number == first.serial_number
            connection.request("GET", "/healthz", headers={"host": NAME})
            assert connection.getresponse().read() == b'{"status": "ok"}'
            connection.close()
            assert running.alive()


def test_a_reset_ca_gets_a_new_account(
    pebble_binary: str, dns: LoopbackDNS, tmp_path: Path
) -> None:
    """A private CA that forgot its accounts (Pebble keeps none across restarts): the
    stored account is refused, a new one is registered and the order goes through."""
    listeners = Listeners()
    (https_port, http_port), acme_port = listeners.ports, reserved_port()
    api = make_api_ca(tmp_path)
    directory = f"https://127.0.0.1:{acme_port}/dir"
    env = acme_env(tmp_path / "state", directory, api.ca_file, NAME, https_port, http_port)

    def fresh_ca(name: str):  # type: ignore[no-untyped-def]
        return pebble(
            pebble_binary, tmp_path / name, http_port=http_port, dns_port=dns.port,
            api=api, listen_port=acme_port,
        )  # fmt: skip

    with fresh_ca("pebble-1") as ca, gateway(env, tmp_path / "gateway-1.log", listeners) as running:
        wait_for_issued(running, NAME, ca.client_context())
    # Another name on the next start makes the gateway order again, from a fresh CA.
    env["MCP_ACME_DOMAINS"] = f"{NAME},replica.test"
    with (
        fresh_ca("pebble-2") as ca,
        gateway(env, tmp_path / "gateway-2.log") as running,
    ):
        cert = wait_for_issued(running, NAME, ca.client_context())
        log = running.log_text()
        assert "the domains changed" in log
        assert "the CA does not know the stored account; registering a new one" in log
        assert "could not obtain" not in log
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(names.get_values_for_type(x509.DNSName)) == {NAME, "replica.test"}
