"""The production image obtains its certificate from ACME (Pebble on the host's loopback).

The container shares the host's network namespace, so the gateway in it and Pebble reach
each other on 127.0.0.1 only; it runs as the image's unprivileged user, with a read-only
root file system and its state on a tmpfs, like compose.yaml's hardening.
"""

from __future__ import annotations

import os
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker import DockerClient

from tests.acme.dns import LoopbackDNS
from tests.acme.gateway_process import peer_certificate
from tests.acme.pebble import pebble, require_pebble
from tests.ports import reserved_port

pytestmark = [pytest.mark.docker, pytest.mark.pebble]

NAME = "memory.test"


@pytest.fixture
def dns() -> Iterator[LoopbackDNS]:
    with LoopbackDNS([NAME]) as server:
        yield server


def test_image_gets_a_certificate_from_acme(
    image: str, docker_client: DockerClient, dns: LoopbackDNS, tmp_path: Path
) -> None:
    binary = require_pebble()
    https_port, http_port = reserved_port(), reserved_port()
    os.chmod(tmp_path, 0o755)
    with pebble(binary, tmp_path / "pebble", http_port=http_port, dns_port=dns.port) as ca:
        os.chmod(tmp_path / "pebble", 0o755)
        os.chmod(ca.api_ca, 0o644)  # the image's user reads it through the bind mount
        started = time.monotonic()
        container = docker_client.containers.run(
            image,
            name=f"mgw-acme-{uuid.uuid4().hex[:8]}",
            detach=True,
            network_mode="host",
            read_only=True,
            tmpfs={"/tmp": "", "/state": "uid=10001,gid=10001,mode=0700"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            volumes={str(ca.api_ca): {"bind": "/acme-ca.pem", "mode": "ro"}},
            environment={
                "MCP_HTTP_HOST": "127.0.0.1",
                "MCP_HTTP_PORT": str(https_port),
                "MCP_HTTP_REDIRECT_PORT": str(http_port),
                "MCP_SSL_CERT_FILE": "",
                "MCP_SSL_KEY_FILE": "",
                "MCP_ACME_DOMAINS": NAME,
                "MCP_ACME_DIRECTORY": ca.directory,
                "MCP_ACME_CA_FILE": "/acme-ca.pem",
                "MCP_API_KEY": "container-acme-key-0123456789",
            },
        )
        try:
            verify = ca.client_context()
            deadline = time.monotonic() + 60
            while True:
                try:
                    cert = peer_certificate(https_port, NAME, verify)
                    break
                except (OSError, ssl.SSLError):
                    container.reload()
                    if time.monotonic() > deadline or container.status != "running":
                        logs = container.logs(tail=40).decode(errors="replace")
                        raise AssertionError(f"no ACME certificate:\n{logs}") from None
                    time.sleep(0.2)
            print(f"\nimage: verified ACME certificate {time.monotonic() - started:.2f} s "
                  "after the container started")  # fmt: skip
            assert NAME in cert.subject.rfc4514_string()
            listing = container.exec_run(["ls", "-l", "/state/acme"]).output.decode()
            assert "-rw------- 1 app app" in listing
            logs = container.logs().decode(errors="replace")
            assert "ACME: certificate for memory.test obtained in" in logs
        finally:
            container.remove(force=True)
