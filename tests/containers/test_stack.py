"""The image as two testcontainers on a private network, driven from the host over TLS.

The backend sits alone on an internal network and publishes nothing; the gateway joins
that network and an ordinary one, publishes 8443 on 127.0.0.1 only and keeps its state
(development CA and certificate, signing keys, clients, grants) on a named volume.
Consent is `auto` here; the compose test exercises the API-key consent form.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from docker import DockerClient
from docker.models.containers import Container
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from tests.clients.consent import HeadlessUserAgent
from tests.clients.mcp_python import (
    HeadlessCallbacks,
    MemoryTokenStorage,
    mcp_session,
    oauth_provider,
    tool_json,
)
from tests.containers.conftest import FAST_HEALTHCHECK, wait_healthy
from tests.integration.test_oauth_flow import REDIRECT_URI, run_flow
from tests.ports import reserved_port

pytestmark = pytest.mark.docker

LABELS = {"memory-gateway.test": "containers"}
HARDENING = {"read_only": True, "cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"]}


@dataclass
class Stack:
    """Backend and gateway containers; the gateway can be replaced on the same volume."""

    docker: DockerClient
    image: str
    directory: Path
    private: Network
    edge: Network
    volumes: tuple[str, str]  # gateway state, backend data
    port: int
    backend: DockerContainer | None = None
    gateway: DockerContainer | None = None
    gateways_started: list[str] = field(default_factory=list)

    @property
    def backend_container(self) -> Container:
        assert self.backend is not None, "the backend is not running"
        return self.backend.get_wrapped_container()

    @property
    def gateway_container(self) -> Container:
        assert self.gateway is not None, "the gateway is not running"
        return self.gateway.get_wrapped_container()

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def start_backend(self) -> None:
        backend = DockerContainer(self.image).with_command(
            ["memory-backend", "--host", "0.0.0.0", "--port", "8001", "--db", "/data/m.db"]
        )
        backend.with_network(self.private).with_network_aliases("backend")
        backend.with_volume_mapping(self.volumes[1], "/data", "rw").with_tmpfs_mount("/tmp")
        backend.with_kwargs(healthcheck=FAST_HEALTHCHECK, **HARDENING)
        self.backend = backend
        backend.start()
        wait_healthy(backend.get_wrapped_container())

    def start_gateway(self) -> None:
        gateway = DockerContainer(self.image).with_command(["memory-gateway", "serve"])
        gateway.with_envs(
            MCP_OAUTH_ISSUER=self.url,
            MCP_GATEWAY_UPSTREAM="http://backend:8001",
            MCP_OAUTH_CONSENT="auto",
        )
        gateway.with_network(self.edge).with_volume_mapping(self.volumes[0], "/state", "rw")
        gateway.with_tmpfs_mount("/tmp").with_kwargs(healthcheck=FAST_HEALTHCHECK, **HARDENING)
        gateway.ports["8443/tcp"] = ("127.0.0.1", self.port)  # type: ignore[assignment]
        self.gateway = gateway
        gateway.start()
        container_id = gateway.get_wrapped_container().id
        assert container_id is not None
        self.gateways_started.append(container_id)
        self.private.connect(container_id)
        wait_healthy(gateway.get_wrapped_container())

    def replace_gateway(self) -> None:
        """Remove the gateway container and start a new one on the same state volume."""
        if self.gateway is not None:
            self.gateway.stop(delete_volume=False)
            self.gateway = None
        self.start_gateway()

    def dev_ca(self) -> Path:
        """The gateway's development CA, copied out of the container (docker cp)."""
        assert self.gateway is not None
        path = self.directory / f"dev-ca-{len(self.gateways_started)}.pem"
        self.gateway.copy_from_container("/state/certs/dev-ca.pem", path)
        return path

    def verify(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.dev_ca()))

    def https(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.verify(), timeout=15)

    def close(self) -> None:
        for container in (self.gateway, self.backend):
            if container is not None:
                try:
                    container.stop()
                except Exception as exc:  # keep cleaning up
                    print(f"could not remove a container: {exc}")
        for network in (self.private, self.edge):
            try:
                network.remove()
            except Exception as exc:
                print(f"could not remove network {network.name}: {exc}")
        for volume in self.volumes:
            try:
                self.docker.volumes.get(volume).remove(force=True)
            except Exception as exc:
                print(f"could not remove volume {volume}: {exc}")


@pytest.fixture(scope="module")
def stack(
    image: str, docker_client: DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:8]
    volumes = tuple(
        str(docker_client.volumes.create(name=f"mgtest-{tag}-{role}", labels=LABELS).name)
        for role in ("state", "data")
    )
    private = Network(docker_network_kw={"internal": True})
    edge = Network()
    built = Stack(
        docker_client,
        image,
        tmp_path_factory.mktemp("stack"),
        private,
        edge,
        (volumes[0], volumes[1]),
        reserved_port(),  # Docker publishes on a host port named first
    )
    try:
        private.create()
        edge.create()
        built.start_backend()
        built.start_gateway()
        yield built
    finally:
        built.close()


@dataclass(frozen=True)
class Grant:
    client_id: str
    registration_token: str
    access_token: str
    refresh_token: str


def grant(http: httpx.Client, issuer: str) -> Grant:
    """Register a public client and take it through authorize (auto consent) and token."""
    registered = http.post(
        "/oauth/register",
        json={
            "client_name": "container restart test",
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
            "scope": "read write offline_access",
        },
    )
    assert registered.status_code == 201, registered.text
    client = registered.json()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    resource = f"{issuer}/mcp"
    answer = http.get(
        "/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": REDIRECT_URI,
            "scope": "read write offline_access",
            "state": "s",
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
            "resource": resource,
        },
    )
    assert answer.status_code in (302, 303), answer.text
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    tokens = http.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": client["client_id"],
            "code_verifier": verifier,
            "resource": resource,
        },
    )
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    return Grant(
        client["client_id"],
        client["registration_access_token"],
        body["access_token"],
        body["refresh_token"],
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stored_by(http: httpx.Client, token: str, content_hash: str) -> dict[str, object]:
    found = http.get(f"/api/memories/{content_hash}", headers=bearer(token))
    assert found.status_code == 200, found.text
    metadata = found.json()["metadata"]
    assert isinstance(metadata, dict)
    return metadata


def test_only_the_gateway_publishes_a_port_and_only_on_loopback(stack: Stack) -> None:
    """The backend publishes nothing and sits on the internal network alone; the gateway
    publishes 8443 on 127.0.0.1 and joins both networks."""
    backend = stack.backend_container
    backend.reload()
    assert not backend.attrs["HostConfig"]["PortBindings"]
    assert not any(backend.attrs["NetworkSettings"]["Ports"].values())
    assert list(backend.attrs["NetworkSettings"]["Networks"]) == [stack.private.name]
    assert stack.docker.networks.get(stack.private.name).attrs["Internal"] is True
    gateway = stack.gateway_container
    gateway.reload()
    bindings = gateway.attrs["HostConfig"]["PortBindings"]
    assert bindings == {"8443/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(stack.port)}]}
    networks = set(gateway.attrs["NetworkSettings"]["Networks"])
    assert networks == {stack.private.name, stack.edge.name}


def test_full_oauth_flow_over_tls_reaches_the_backend_as_the_client(stack: Stack) -> None:
    """D5 → D4 → A3 → T3 → refresh → revocation from the host, verified against the CA
    copied out of the container; the backend records the OAuth client the gateway vouches
    for, whatever identity header the caller sends."""
    result = run_flow(stack.url, verify=stack.verify(), api_key=None)
    assert result.issuer == stack.url
    assert len(result.steps) == 8, result.steps
    with stack.https() as http:
        reader = grant(http, stack.url)
        assert stored_by(http, reader.access_token, result.stored_hash)["stored_by"] == (
            result.client_id
        )
        forged = http.post(
            "/api/memories",
            headers={**bearer(reader.access_token), "X-Auth-Client-Id": "forged-client"},
            json={"content": f"identity check {secrets.token_hex(4)}"},
        )
        assert forged.status_code == 200, forged.text
        metadata = forged.json()["memory"]["metadata"]
    assert metadata["stored_by"] == reader.client_id
    assert metadata["stored_by_subject"]


def test_untrusted_certificate_is_refused(stack: Stack) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{stack.url}/healthz", verify=ssl.create_default_context())


@pytest.mark.anyio
async def test_mcp_sdk_initializes_lists_tools_and_stores_a_memory(stack: Stack) -> None:
    """The official MCP Python SDK through the gateway container over TLS: discovery from
    the 401, registration, PKCE, initialize, tools/list and tools/call store_memory."""
    verify = stack.verify()
    storage = MemoryTokenStorage()
    callbacks = HeadlessCallbacks(HeadlessUserAgent(verify))
    provider = oauth_provider(f"{stack.url}/mcp", callbacks, storage)
    content = f"stored over MCP in a container {secrets.token_hex(4)}"
    async with mcp_session(f"{stack.url}/mcp", provider, verify) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert {"store_memory", "retrieve_memory", "list_memories"} <= tools
        stored = tool_json(await client.call_tool("store_memory", {"content": content}))
    assert stored["success"] is True
    assert storage.client_info is not None
    assert storage.tokens is not None
    with stack.https() as http:
        metadata = stored_by(http, storage.tokens.access_token, str(stored["content_hash"]))
    assert metadata["stored_by"] == storage.client_info.client_id


def test_state_survives_replacing_the_gateway_container(stack: Stack) -> None:
    """Signing keys, registered clients and grants live on the /state volume: a new
    container on it keeps the JWKS, accepts earlier tokens and rotates earlier refresh
    tokens."""
    with stack.https() as http:
        before = grant(http, stack.url)
        kids = {key["kid"] for key in http.get("/oauth/jwks").json()["keys"]}
        assert http.get("/api/memories", headers=bearer(before.access_token)).status_code == 200
    ca_before = stack.dev_ca().read_bytes()

    stack.replace_gateway()

    assert len(set(stack.gateways_started)) == len(stack.gateways_started) >= 2
    assert stack.dev_ca().read_bytes() == ca_before
    with stack.https() as http:
        assert {key["kid"] for key in http.get("/oauth/jwks").json()["keys"]} == kids
        old_token = http.get("/api/memories", headers=bearer(before.access_token))
        assert old_token.status_code == 200, old_token.text
        client = http.get(
            f"/oauth/clients/{before.client_id}", headers=bearer(before.registration_token)
        )
        assert client.status_code == 200, client.text
        assert client.json()["client_id"] == before.client_id
        renewed = http.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": before.refresh_token,
                "client_id": before.client_id,
            },
        )
        assert renewed.status_code == 200, renewed.text
        assert renewed.json()["refresh_token"] != before.refresh_token
        fresh = bearer(renewed.json()["access_token"])
        assert http.get("/api/memories", headers=fresh).status_code == 200


PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 8443), timeout=1.5).close()
except OSError as exc:
    print("refused", type(exc).__name__)
else:
    print("connected")
"""


def test_backend_reaches_the_gateway_only_over_the_private_network(stack: Stack) -> None:
    """From inside the backend the gateway answers on its private-network address, and its
    address on the edge network (the one with the published port) cannot be reached."""
    gateway = stack.gateway_container
    gateway.reload()
    addresses = {
        name: network["IPAddress"]
        for name, network in gateway.attrs["NetworkSettings"]["Networks"].items()
    }
    backend = stack.backend_container

    def probe(address: str) -> str:
        code, output = backend.exec_run(["python3", "-c", PROBE, address])
        assert code == 0, output
        return bytes(output).decode().strip()

    assert probe(addresses[stack.private.name]) == "connected"
    assert probe(addresses[stack.edge.name]).startswith("refused")
