"""Pebble, Let's Encrypt's ACME test server, started by the tests on loopback.

Pebble ships no certificate for its own API: each instance gets one from a trustme CA,
which the gateway trusts through MCP_ACME_CA_FILE. It validates HTTP-01 on `http_port`
(the gateway's plain-HTTP listener) and resolves names through `dns_port` (the tests'
LoopbackDNS), so no traffic leaves loopback. Tests skip without the `pebble` binary
unless REQUIRE_PEBBLE=1 (set by .ci/run, which installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme

from tests.ports import reserved_port


def require_pebble() -> str:
    binary = shutil.which("pebble") or (
        "/usr/bin/pebble" if Path("/usr/bin/pebble").exists() else None
    )
    if binary is not None:
        return binary
    reason = "pebble is not installed (apt-get install pebble)"
    if os.environ.get("REQUIRE_PEBBLE", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"REQUIRE_PEBBLE=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Pebble:
    directory: str
    management: str
    api_ca: Path  # trust this for the ACME API (MCP_ACME_CA_FILE)
    process: subprocess.Popen[bytes]
    log: Path

    def root_pem(self) -> str:
        """The root that issued chains lead to (Pebble makes a new one at each start)."""
        response = httpx.get(
            f"{self.management}/roots/0",
            verify=ssl.create_default_context(cafile=self.api_ca),
            timeout=5,
        )
        response.raise_for_status()
        return response.text

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.root_pem())
        return context


@dataclass(frozen=True)
class PebbleCA:
    ca: trustme.CA
    ca_file: Path


def make_api_ca(directory: Path) -> PebbleCA:
    ca = trustme.CA()
    ca_file = directory / "pebble-api-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return PebbleCA(ca, ca_file)


@contextmanager
def pebble(
    binary: str,
    directory: Path,
    *,
    http_port: int,
    dns_port: int,
    validity_seconds: int | None = None,
    api: PebbleCA | None = None,
    listen_port: int | None = None,
) -> Iterator[Pebble]:
    directory.mkdir(parents=True, exist_ok=True)
    api = api or make_api_ca(directory)
    leaf = api.ca.issue_cert("127.0.0.1", "localhost")
    cert, key = directory / "pebble-api.pem", directory / "pebble-api-key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    # Pebble cannot report a port it picked, and `http_port` (where it validates) is the
    # gateway's redirect port, written into both configurations first: reserved ports.
    port, management_port = listen_port or reserved_port(), reserved_port()
    config: dict[str, object] = {
        "listenAddress": f"127.0.0.1:{port}",
        "managementListenAddress": f"127.0.0.1:{management_port}",
        "certificate": str(cert),
        "privateKey": str(key),
        "httpPort": http_port,
        "tlsPort": reserved_port(),  # TLS-ALPN-01 is not used; nothing listens there
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }
    if validity_seconds is not None:
        config["certificateValidityPeriod"] = validity_seconds
    config_file = directory / "pebble-config.json"
    config_file.write_text(json.dumps({"pebble": config}))
    env = {
        **os.environ,
        "PEBBLE_VA_NOSLEEP": "1",  # validate at once
        "PEBBLE_WFE_NONCEREJECT": "0",  # no random badNonce rejections
        "PEBBLE_AUTHZREUSE": "0",  # every order validates afresh
    }
    log = directory / "pebble.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [binary, "-config", str(config_file), "-dnsserver", f"127.0.0.1:{dns_port}"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Pebble(
        f"https://127.0.0.1:{port}/dir", f"https://127.0.0.1:{management_port}",
        api.ca_file, process, log,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"pebble exited: {log.read_text()[-2000:]}")
            try:
                httpx.get(
                    server.directory,
                    verify=ssl.create_default_context(cafile=api.ca_file),
                    timeout=1,
                ).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("pebble did not answer within 20 s") from None
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
