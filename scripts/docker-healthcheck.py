"""Container health probe for either program in the image.

Finds which program runs in the container (memory-gateway or memory-backend) and asks its
health route on loopback: the gateway's GET /readyz (ready: its OAuth store answers and
the backend accepts connections), the backend's GET /api/health. Exit 0 when it answers
200, 1 otherwise (printing the reason /readyz gave).

`docker-healthcheck live` asks the gateway's /healthz instead (liveness only: the process
serves requests), for orchestrators that restart on a failed check (Kubernetes: use
/healthz as the liveness probe and /readyz as the readiness probe).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

TRUE = {"1", "true", "yes", "on"}


def running_command() -> list[str]:
    for cmdline in sorted(Path("/proc").glob("[0-9]*/cmdline")):
        try:
            argv = [a.decode(errors="replace") for a in cmdline.read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if any(Path(arg).name in ("memory-gateway", "memory-backend") for arg in argv[:3]):
            return argv
    return []


def option(argv: list[str], name: str) -> str | None:
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def health_url(argv: list[str], live: bool = False) -> str:
    if any(Path(arg).name == "memory-backend" for arg in argv[:3]):
        port = option(argv, "--port") or os.environ.get("MEMORY_BACKEND_PORT", "8001")
        return f"http://127.0.0.1:{port}/api/health"
    https = os.environ.get("MCP_HTTPS_ENABLED", "false").lower() in TRUE
    default_port = "8443" if https else "8000"
    port = option(argv, "--port") or os.environ.get("MCP_HTTP_PORT") or default_port
    path = "/healthz" if live else "/readyz"
    return f"{'https' if https else 'http'}://127.0.0.1:{port}{path}"


def main() -> int:
    argv = running_command()
    if not argv:
        print("neither memory-gateway nor memory-backend is running", file=sys.stderr)
        return 1
    url = health_url(argv, live="live" in sys.argv[1:])
    # Loopback inside the container: the peer is known, and the certificate may be
    # issued for the public name only, so it is not verified here.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as response:  # noqa: S310
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(f"{url}: {exc.code} {exc.read(2048).decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
