"""The online build (no wheelhouse) installs exactly what uv.lock pins, hashes checked.

Containers here cannot reach the package index, so the test plays the index itself: the
host downloads the files uv.lock pins (hash-checked against the lock) plus uv and the build
backend, lays them out as a PEP 503 "simple" index, serves it on 127.0.0.1, and the real
Dockerfile is built with `--network host` and `--build-arg INDEX_URL=...` (the same
argument a user gives for a mirror). Every file the build installs is seen fetched from that
server. A second build against a copy of the index where one wheel was altered (still a
valid wheel, announced with its new hash, as a bad mirror would) must fail on the lock's
hash.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from docker import DockerClient
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

from tests.containers.conftest import LOCAL_BASE, ROOT, _has_image, _unavailable

pytestmark = pytest.mark.docker

ONLINE_TAG = "memory-gateway:pytest-online"
TAMPERED_TAG = "memory-gateway:pytest-online-tampered"
BUILD_TIMEOUT = 600.0
DOWNLOAD_TIMEOUT = 300.0
# What the image's interpreter reports, for evaluating the lock's environment markers.
MARKER_ENV = """
import json, os, platform, sys
v = sys.implementation.version
print(json.dumps({
    "implementation_name": sys.implementation.name,
    "implementation_version": f"{v.major}.{v.minor}.{v.micro}",
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}))
"""
DISTRIBUTIONS = (
    "import importlib.metadata as m, json;"
    "print(json.dumps(sorted([d.metadata['Name'], d.version] for d in m.distributions())))"
)
# Never copied into the build context (the wheelhouse would select the offline path).
NOT_CONTEXT = (".git", ".venv", "node_modules", "wheelhouse", "__pycache__", ".*_cache")


@dataclass(frozen=True)
class Locked:
    requirement: Requirement
    hashes: frozenset[str]


@dataclass
class Index:
    url: str  # the good index's /simple URL
    tampered_url: str
    tampered: str  # file name of the altered wheel
    locked: set[str]  # canonical names of the lock's selection for the image's interpreter
    expected: dict[str, str]  # what the image must hold: canonical name -> version
    fetched: list[str] = field(default_factory=list)


def uv_version() -> str:
    match = re.search(r"^ARG UV_VERSION=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert match, "Dockerfile has no ARG UV_VERSION"
    return match.group(1)


def locked_requirements() -> list[Locked]:
    exported = subprocess.run(
        ["uv", "export", "--frozen", "--no-dev", "--no-emit-project", "--no-header",
         "--no-annotate", "--quiet"],
        cwd=ROOT, check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    result = []
    for line in exported.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        spec, *hashes = line.split(" --hash=")
        result.append(Locked(Requirement(spec), frozenset(h.strip() for h in hashes)))
    return result


def pip(*args: str) -> None:
    subprocess.run(
        ["uv", "run", "--no-sync", "--with", "pip", "python", "-m", "pip", *args],
        cwd=ROOT, check=True, timeout=DOWNLOAD_TIMEOUT,
    )  # fmt: skip


def project_name(file_name: str) -> str:
    if file_name.endswith(".whl"):
        return canonicalize_name(parse_wheel_filename(file_name)[0])
    return canonicalize_name(parse_sdist_filename(file_name)[0])


def write_simple_index(root: Path, files: Path) -> None:
    """PEP 503 pages under root/simple/<name>/ linking to files/, each with its sha256."""
    projects: dict[str, list[Path]] = {}
    for path in sorted(files.iterdir()):
        projects.setdefault(project_name(path.name), []).append(path)
    simple = root / "simple"
    for name, paths in projects.items():
        links = "".join(
            f'<a href="../../{files.name}/{html.escape(p.name)}#sha256='
            f'{hashlib.sha256(p.read_bytes()).hexdigest()}">{html.escape(p.name)}</a>\n'
            for p in paths
        )
        (simple / name).mkdir(parents=True)
        (simple / name / "index.html").write_text(
            f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n"
        )
    root_links = "".join(f'<a href="{n}/">{n}</a>\n' for n in sorted(projects))
    (simple / "index.html").write_text(
        f"<!DOCTYPE html>\n<html><body>\n{root_links}</body></html>\n"
    )


def tamper(wheel: Path) -> None:
    """Still a valid wheel, one file more: what a compromised mirror could serve."""
    with zipfile.ZipFile(wheel, "a") as archive:
        archive.writestr("tampered.txt", "not what uv.lock pins\n")


def serve(root: Path, fetched: list[str]) -> ThreadingHTTPServer:
    class Handler(SimpleHTTPRequestHandler):
        timeout = 30  # seconds a connection may sit idle

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            if str(code) == "200":
                fetched.append(self.path)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            if not isinstance(sys.exc_info()[1], ConnectionError):  # uv hung up: expected
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def base_image(client: DockerClient) -> str:
    return os.environ.get("BASE_IMAGE") or (
        LOCAL_BASE if _has_image(client, LOCAL_BASE) else "python:3.12-slim"
    )


@pytest.fixture(scope="module")
def marker_env(docker_client: DockerClient) -> dict[str, str]:
    output = docker_client.containers.run(
        base_image(docker_client), ["python3", "-c", MARKER_ENV], entrypoint=[], remove=True
    )
    env: dict[str, str] = json.loads(bytes(output))
    return env


def selected_for(env: dict[str, str]) -> list[Locked]:
    return [
        r for r in locked_requirements()
        if r.requirement.marker is None or r.requirement.marker.evaluate(env)
    ]  # fmt: skip


def expected_distributions(selected: list[Locked]) -> dict[str, str]:
    """Canonical name -> version: the lock's selection for the image, and the project."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected: dict[str, str] = {
        canonicalize_name(r.requirement.name): next(iter(r.requirement.specifier)).version
        for r in selected
    }
    expected[canonicalize_name(project["name"])] = project["version"]
    return expected


def installed_distributions(client: DockerClient, image: str) -> dict[str, str]:
    output = client.containers.run(
        image, ["python3", "-c", DISTRIBUTIONS], entrypoint=[], remove=True
    )
    return {canonicalize_name(name): version for name, version in json.loads(bytes(output))}


@pytest.fixture(scope="module")
def index(marker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    host = f"{sys.version_info.major}.{sys.version_info.minor}"
    if marker_env["python_version"] != host:
        # The host downloads wheels for its own interpreter.
        _unavailable(f"base image has Python {marker_env['python_version']}, the host {host}")
    work = tmp_path_factory.mktemp("index")
    selected = selected_for(marker_env)
    # Markers already evaluated for the image; pip would evaluate them for the host.
    (work / "locked.txt").write_text(
        "".join(
            f"{r.requirement.name}{r.requirement.specifier} "
            + " ".join(f"--hash={h}" for h in sorted(r.hashes))
            + "\n"
            for r in selected
        )
    )
    good, bad = work / "good", work / "bad"
    files = good / "files"
    started = time.monotonic()
    # --require-hashes: pip refuses any file whose sha256 is not one uv.lock lists.
    pip("download", "--quiet", "--no-deps", "--only-binary=:all:", "--require-hashes",
        "-d", str(files), "-r", str(work / "locked.txt"))  # fmt: skip
    # uv for the build stage and the build backend (not in the lock; see the Dockerfile).
    pip("download", "--quiet", "--only-binary=:all:", "-d", str(files),
        f"uv=={uv_version()}", "hatchling")  # fmt: skip
    print(f"downloaded {len(list(files.iterdir()))} files in {time.monotonic() - started:.1f}s")
    write_simple_index(good, files)
    # The victim: the smallest locked pure-Python wheel.
    victims = sorted(
        (p for p in files.iterdir() if p.name.endswith("-none-any.whl")
         and project_name(p.name) in {canonicalize_name(r.requirement.name) for r in selected}),
        key=lambda p: p.stat().st_size,
    )  # fmt: skip
    assert victims, "no pure-Python locked wheel to tamper with"
    shutil.copytree(files, bad / "files")
    tamper(bad / "files" / victims[0].name)
    write_simple_index(bad, bad / "files")
    locked: set[str] = {canonicalize_name(r.requirement.name) for r in selected}
    fetched: list[str] = []
    server = serve(work, fetched)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield Index(
            f"{base}/good/simple", f"{base}/bad/simple", victims[0].name, locked,
            expected_distributions(selected), fetched,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()


def build_context(tmp: Path) -> Path:
    context = tmp / "context"
    shutil.copytree(ROOT, context, ignore=shutil.ignore_patterns(*NOT_CONTEXT), symlinks=True)
    return context


def docker_build(
    context: Path, tag: str, base: str, index_url: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "build", "--network", "host", "--rm", "--force-rm", "-t", tag,
         "--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"INDEX_URL={index_url}",
         str(context)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},  # the legacy builder, as everywhere here
    )  # fmt: skip


def remove_image(client: DockerClient, tag: str) -> None:
    if _has_image(client, tag):
        client.images.remove(tag, force=True)


def test_online_build_installs_exactly_the_locked_versions(
    docker_client: DockerClient, index: Index, tmp_path: Path
) -> None:
    base = base_image(docker_client)
    started = time.monotonic()
    built = docker_build(build_context(tmp_path), ONLINE_TAG, base, index.url)
    elapsed = time.monotonic() - started
    assert built.returncode == 0, f"online build failed:\n{(built.stdout + built.stderr)[-4000:]}"
    print(f"online build on {base} in {elapsed:.1f}s")
    try:
        assert installed_distributions(docker_client, ONLINE_TAG) == index.expected
        # Every locked distribution was fetched from the loopback index.
        served = {Path(p).name for p in index.fetched if p.startswith("/good/files/")}
        names = {project_name(n) for n in served}
        assert index.locked <= names
    finally:
        remove_image(docker_client, ONLINE_TAG)


def test_online_build_refuses_a_file_that_is_not_the_locked_one(
    docker_client: DockerClient, index: Index, tmp_path: Path
) -> None:
    built = docker_build(
        build_context(tmp_path), TAMPERED_TAG, base_image(docker_client), index.tampered_url
    )
    remove_image(docker_client, TAMPERED_TAG)
    log = built.stdout + built.stderr
    assert built.returncode != 0, "the build accepted a wheel whose hash is not in uv.lock"
    name = project_name(index.tampered)
    assert re.search(rf"[Hh]ash mismatch for `{re.escape(name)}==", log), log[-4000:]


def test_offline_image_holds_exactly_the_locked_versions(
    docker_client: DockerClient, image: str, marker_env: dict[str, str]
) -> None:
    """The session's image (CI: the wheelhouse path) holds the same as the online build."""
    expected = expected_distributions(selected_for(marker_env))
    assert installed_distributions(docker_client, image) == expected
