"""Container fixtures: the real Dockerfile built once per session, the real compose.yaml.

Tests here carry `@pytest.mark.docker`. Without a Docker engine they are skipped, unless
REQUIRE_DOCKER=1 (CI), where a missing engine is a failure. On a machine with no registry
access the image is built on `localbase/python:3.11-bookworm` (made by
.ci/docker-setup.sh) from a wheelhouse (made here by .ci/wheelhouse.sh).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before testcontainers reads its configuration: the reaper image cannot be pulled here,
# and inside a container-like sandbox it would otherwise aim at the bridge gateway.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")

import docker
from docker.models.containers import Container
from testcontainers.core.image import DockerImage

ROOT = Path(__file__).resolve().parents[2]
LOCAL_BASE = "localbase/python:3.11-bookworm"
TEST_TAG = "memory-gateway:pytest"
HEALTH_TIMEOUT = 90.0
SECOND_NS = 1_000_000_000
# The image's health check polls every 10 s (right for production); containers started
# by these tests poll every second so they are seen healthy as soon as they are ready.
FAST_HEALTHCHECK = {
    "test": ["CMD", "python3", "/usr/local/bin/docker-healthcheck"],
    "interval": SECOND_NS,
    "timeout": 5 * SECOND_NS,
    "retries": 3,
    "start_period": 30 * SECOND_NS,
}


def _required() -> bool:
    return os.environ.get("REQUIRE_DOCKER", "").strip().lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> None:
    if _required():
        pytest.fail(f"REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:
        _unavailable(f"no Docker engine: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def compose_cli(docker_client: docker.DockerClient) -> list[str]:
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        _unavailable("no docker CLI on PATH")
    command = [str(docker_cli), "compose"]
    probe = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        _unavailable(f"no compose v2 plugin: {probe.stderr.strip()}")
    return command


def _has_image(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


@pytest.fixture(scope="session")
def image(docker_client: docker.DockerClient) -> str:
    """Tag of the image built from the working tree for this session."""
    base = os.environ.get("BASE_IMAGE") or (
        LOCAL_BASE if _has_image(docker_client, LOCAL_BASE) else "python:3.12-slim"
    )
    if base == LOCAL_BASE:
        subprocess.run(["bash", str(ROOT / ".ci/wheelhouse.sh"), base], check=True, timeout=600)
    started = time.monotonic()
    try:
        DockerImage(
            path=ROOT, tag=TEST_TAG, clean_up=False, buildargs={"BASE_IMAGE": base},
            rm=True, forcerm=True,
        ).build()  # fmt: skip
    except docker.errors.BuildError as exc:
        log = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)
        pytest.fail(f"docker build failed on {base}:\n{log[-4000:]}", pytrace=False)
    print(f"built {TEST_TAG} on {base} in {time.monotonic() - started:.1f}s")
    return TEST_TAG


def wait_healthy(container: Container, timeout: float = HEALTH_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        state = container.attrs["State"]
        status = state.get("Health", {}).get("Status")
        if status == "healthy":
            return
        if not state.get("Running") or status == "unhealthy" or time.monotonic() > deadline:
            logs = container.logs(tail=40).decode(errors="replace")
            raise AssertionError(f"{container.name} is {status or state['Status']}:\n{logs}")
        time.sleep(0.5)
