"""The real compose.yaml: TLS at the edge, a private backend, state on named volumes."""

from __future__ import annotations

import json
import secrets
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from docker import DockerClient
from testcontainers.compose import DockerCompose

from tests.containers.conftest import ROOT, wait_healthy
from tests.integration.test_oauth_flow import FlowError, run_flow

pytestmark = pytest.mark.docker

API_KEY = secrets.token_urlsafe(24)


class Stack:
    def __init__(self, compose: DockerCompose, client: DockerClient, project: str) -> None:
        self.compose, self.docker, self.project = compose, client, project

    def container(self, service: str):  # type: ignore[no-untyped-def]
        return self.docker.containers.get(self.compose.get_container(service).ID)

    @property
    def gateway_port(self) -> int:
        host, port = self.compose.get_service_host_and_port("gateway", 8443)
        assert host in ("127.0.0.1", "localhost")
        assert port is not None
        return int(port)

    def dev_ca(self, directory: Path) -> Path:
        stdout, _, code = self.compose.exec_in_container(
            ["cat", "/state/certs/dev-ca.pem"], service_name="gateway"
        )
        assert code == 0
        path = directory / "dev-ca.pem"
        path.write_text(stdout)
        return path

    def https(self, ca_file: Path) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(ca_file))
        return httpx.Client(base_url=f"https://localhost:{self.gateway_port}", verify=context)


@pytest.fixture(scope="module")
def stack(
    image: str,
    docker_client: DockerClient,
    compose_cli: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    project = f"mgtest-{uuid.uuid4().hex[:8]}"
    env_file = tmp_path_factory.mktemp("compose") / "test.env"
    env_file.write_text(
        f"COMPOSE_PROJECT_NAME={project}\n"
        f"GATEWAY_IMAGE={image}\n"
        "GATEWAY_PUBLISH=127.0.0.1:\n"  # -> "127.0.0.1::8443": loopback, random port
        "MCP_OAUTH_ISSUER=https://localhost:8443\n"
        "MCP_OAUTH_CONSENT=api_key\n"
        f"MCP_API_KEY={API_KEY}\n"
    )
    compose = DockerCompose(ROOT, compose_file_name="compose.yaml", env_file=str(env_file),
                            build=False, wait=True)  # fmt: skip
    try:
        compose.start()
    except subprocess.CalledProcessError as exc:
        logs = subprocess.run([*compose.compose_command_property, "logs", "--no-color"],
                              cwd=ROOT, capture_output=True, text=True).stdout  # fmt: skip
        compose.stop()
        pytest.fail(f"compose up failed: {exc.stderr.decode()}\n{logs[-4000:]}", pytrace=False)
    try:
        yield Stack(compose, docker_client, project)
    finally:
        compose.stop()


def test_only_the_gateway_is_published_and_the_backend_network_is_internal(stack: Stack) -> None:
    assert stack.gateway_port > 0
    backend = stack.container("backend")
    assert not any(backend.attrs["NetworkSettings"]["Ports"].values())
    networks = backend.attrs["NetworkSettings"]["Networks"]
    assert list(networks) == [f"{stack.project}_private"]
    assert stack.docker.networks.get(f"{stack.project}_private").attrs["Internal"] is True
    assert set(stack.container("gateway").attrs["NetworkSettings"]["Networks"]) == {
        f"{stack.project}_private", f"{stack.project}_edge",
    }  # fmt: skip


def test_gateway_serves_tls_from_its_dev_ca(stack: Stack, tmp_path: Path) -> None:
    ca_file = stack.dev_ca(tmp_path)
    with stack.https(ca_file) as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.extensions["http_version"] == b"HTTP/1.1"
    # Containers on the private network reach it by its service name.
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="gateway") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_memory_round_trip_through_the_gateway(stack: Stack, tmp_path: Path) -> None:
    with stack.https(stack.dev_ca(tmp_path)) as client:
        anonymous = client.get("/api/memories")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")

        auth = {"Authorization": f"Bearer {API_KEY}"}
        body = {"content": "through the edge", "tags": ["compose"]}
        created = client.post("/api/memories", headers=auth, json=body)
        assert created.status_code in (200, 201), created.text
        memory = created.json()["memory"]
        assert memory["metadata"]["stored_by_subject"], "the gateway injected no identity"

        listed = client.get("/api/memories", headers=auth).json()["memories"]
        assert "through the edge" in [m["content"] for m in listed]


def test_a6_oauth_flow_with_the_consent_form_approved_by_api_key(
    stack: Stack, tmp_path: Path
) -> None:
    """A6 in compose: discovery → registration → consent form approved with MCP_API_KEY →
    token → protected calls → refresh → revocation, over TLS from the host; without the
    key, or with a wrong one, no code is issued."""
    url = f"https://localhost:{stack.gateway_port}"
    verify = ssl.create_default_context(cafile=str(stack.dev_ca(tmp_path)))
    result = run_flow(url, verify=verify, api_key=API_KEY)
    assert result.issuer == "https://localhost:8443"
    assert len(result.steps) == 8, result.steps
    with stack.https(stack.dev_ca(tmp_path)) as client:
        found = client.get(f"/api/memories/{result.stored_hash}", headers={"X-API-Key": API_KEY})
    assert found.status_code == 200, found.text
    assert found.json()["metadata"]["stored_by"] == result.client_id
    with pytest.raises(FlowError, match="authorize: 200"):
        run_flow(url, verify=verify, api_key=None)
    with pytest.raises(FlowError, match="authorize: "):
        run_flow(url, verify=verify, api_key="not-the-key-" + secrets.token_urlsafe(16))


def test_state_survives_a_restart(stack: Stack, tmp_path: Path) -> None:
    ca_before = stack.dev_ca(tmp_path).read_bytes()
    with stack.https(stack.dev_ca(tmp_path)) as client:
        client.post("/api/memories", headers={"X-API-Key": API_KEY},
                    json={"content": "kept across restarts"})  # fmt: skip
    subprocess.run([*stack.compose.compose_command_property, "restart"], cwd=ROOT,
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    wait_healthy(stack.container("backend"))
    wait_healthy(stack.container("gateway"))
    assert stack.dev_ca(tmp_path).read_bytes() == ca_before
    with stack.https(stack.dev_ca(tmp_path)) as client:
        listed = client.get("/api/memories", headers={"X-API-Key": API_KEY}).json()["memories"]
    assert "kept across restarts" in [m["content"] for m in listed]


def test_ready_and_logging_json_requests(stack: Stack, tmp_path: Path) -> None:
    """The gateway is healthy by /readyz (compose waited for it) and logs JSON lines."""
    with stack.https(stack.dev_ca(tmp_path)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready"}
        assert client.get("/api/memories", params={"secret": "q"}).status_code == 401
    time.sleep(0.5)
    logs = subprocess.run([*stack.compose.compose_command_property, "logs", "--no-color",
                           "gateway"], cwd=ROOT, capture_output=True, text=True).stdout  # fmt: skip
    lines = [json.loads(line.split("|", 1)[1]) for line in logs.splitlines()
             if '"request_id"' in line]  # fmt: skip
    assert any(li["path"] == "/readyz" and li["status"] == 200 for li in lines)
    assert any(li["path"] == "/api/memories" and li["status"] == 401 for li in lines)
    assert "secret=q" not in logs
