"""The image itself: both programs, non-root, clean, labelled, and a healthy backend."""

from __future__ import annotations

import httpx
import pytest
from docker import DockerClient
from testcontainers.core.container import DockerContainer

from tests.containers.conftest import FAST_HEALTHCHECK, wait_healthy

pytestmark = pytest.mark.docker


def run(client: DockerClient, image: str, *command: str) -> str:
    output = client.containers.run(image, list(command), entrypoint=[], remove=True)
    return bytes(output).decode()


def test_both_programs_run_as_an_unprivileged_user(docker_client: DockerClient, image: str) -> None:
    assert run(docker_client, image, "id", "-u").strip() == "10001"
    assert "serve" in run(docker_client, image, "memory-gateway", "--help")
    assert "--db" in run(docker_client, image, "memory-backend", "--help")


def test_no_build_tools_sources_or_caches_are_left(docker_client: DockerClient, image: str) -> None:
    probe = (
        "import importlib.util as u, os, sys;"
        "left = [m for m in ('pip', 'setuptools', 'hatchling') if u.find_spec(m)];"
        "left += [p for p in ('/src', '/wheelhouse', '/root/.cache/pip', '/state/.cache')"
        " if os.path.exists(p)];"
        "print(sys.prefix, left)"
    )
    assert run(docker_client, image, "python3", "-c", probe).split() == ["/opt/venv", "[]"]


def test_labels_health_check_and_default_command(docker_client: DockerClient, image: str) -> None:
    config = docker_client.images.get(image).attrs["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "memory-gateway"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.version"]
    assert config["Healthcheck"]["Test"][-1] == "/usr/local/bin/docker-healthcheck"
    assert config["Cmd"] == ["memory-gateway", "serve"]
    assert config["User"] == "app"


def test_backend_container_is_healthy_and_stores_memories(image: str) -> None:
    backend = DockerContainer(image).with_command(
        ["memory-backend", "--host", "0.0.0.0", "--port", "8001", "--db", "/data/memories.db"]
    )
    backend.with_kwargs(healthcheck=FAST_HEALTHCHECK)
    backend.ports["8001"] = ("127.0.0.1",)  # type: ignore[assignment]  # loopback only, random port
    with backend:
        wait_healthy(backend.get_wrapped_container())
        base = f"http://127.0.0.1:{backend.get_exposed_port(8001)}"
        assert httpx.get(f"{base}/api/health").json()["status"] == "healthy"
        created = httpx.post(
            f"{base}/api/memories", json={"content": "container round trip", "tags": ["ci"]}
        )
        assert created.status_code in (200, 201), created.text
        listed = httpx.get(f"{base}/api/memories").json()["memories"]
        assert [m["content"] for m in listed] == ["container round trip"]
        assert listed[0]["tags"] == ["ci"]
