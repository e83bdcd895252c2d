"""memory-gateway: serve | dev | certs | keys | people | clients | grants."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from gateway.policy import PolicyError
from gateway.settings import Settings, SettingsError

log = logging.getLogger("gateway")

FLAG_NAMES = {
    "host": "MCP_HTTP_HOST",
    "port": "MCP_HTTP_PORT",
    "upstream": "MCP_GATEWAY_UPSTREAM",
    "issuer": "MCP_OAUTH_ISSUER",
    "state_dir": "MCP_GATEWAY_STATE_DIR",
    "storage": "MCP_OAUTH_STORAGE",
    "consent": "MCP_OAUTH_CONSENT",
    "policy_file": "MCP_GATEWAY_POLICY",
    "cert_file": "MCP_SSL_CERT_FILE",
    "key_file": "MCP_SSL_KEY_FILE",
    "log_level": "MCP_GATEWAY_LOG_LEVEL",
    "workers": "MCP_GATEWAY_WORKERS",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        level = _log_level(getattr(args, "log_level", None), os.environ)
    except SettingsError as exc:
        print(f"memory-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        _configure_logging(level, _log_file(args), _log_format(os.environ))
        return int(args.handler(args))
    except (SettingsError, PolicyError) as exc:
        print(f"memory-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ssl.SSLError) as exc:
        print(f"memory-gateway: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except ImportError as exc:
        if not getattr(exc, "unsupported_uvicorn", False):
            raise
        print(f"memory-gateway: cannot start: {exc}", file=sys.stderr)
        return 1


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The seed document's debug command is `tail -f logs/mcp-memory-service.log | grep -i oauth`.
DEV_LOG_FILE = Path("logs/mcp-memory-service.log")


def _log_file(args: argparse.Namespace) -> Path | None:
    named = getattr(args, "log_file", None) or os.environ.get("MCP_GATEWAY_LOG_FILE")
    if named:
        return Path(named)
    return DEV_LOG_FILE if args.command == "dev" else None


def _configure_logging(level: int, log_file: Path | None, log_format: str = "text") -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=handlers)
    if log_format == "json":
        from gateway.observability.requestlog import JsonFormatter

        for handler in handlers:
            handler.setFormatter(JsonFormatter())


def _log_format(env: Mapping[str, str]) -> str:
    """MCP_GATEWAY_LOG_FORMAT (validated with the other settings once they are read)."""
    return (env.get("MCP_GATEWAY_LOG_FORMAT") or "text").strip().lower()


def _log_level(flag: str | None, env: Mapping[str, str]) -> int:
    name = (flag or env.get("MCP_GATEWAY_LOG_LEVEL") or "info").upper()
    level = logging.getLevelNamesMapping().get(name)
    if level is None:
        raise SettingsError(f"MCP_GATEWAY_LOG_LEVEL must be a log level name, got {name!r}")
    return level


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memory-gateway",
        description="OAuth 2.1 gateway in front of an MCP memory service.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway (configured by environment)")
    _server_flags(serve)
    _port_file_flag(serve)
    serve.set_defaults(handler=_serve)

    dev = commands.add_parser(
        "dev", help="run backend + gateway on loopback with HTTPS from a development CA"
    )
    dev.add_argument("--port", type=int, default=8443, help="gateway HTTPS port (8443)")
    dev.add_argument("--backend-port", type=int, default=8001, help="backend port (8001)")
    dev.add_argument("--certs-dir", type=Path, default=Path("certs"))
    dev.add_argument("--state-dir", type=Path, default=Path("state/dev"))
    dev.add_argument(
        "--upstream",
        help="front an existing memory service at this URL instead of starting the backend",
    )
    dev.add_argument("--log-file", help=f"also log here (default {DEV_LOG_FILE})")
    _port_file_flag(dev)
    dev.set_defaults(handler=_dev)

    certs = commands.add_parser("certs", help="make a development CA and server certificate")
    certs.add_argument("--dir", type=Path, default=Path("certs"))
    certs.add_argument("--san", action="append", default=[], help="extra DNS name or IP")
    certs.set_defaults(handler=_certs)

    key_cmd = commands.add_parser("keys", help="manage token signing keys")
    key_cmd.add_argument("action", choices=["list", "rotate"])
    key_cmd.add_argument("--state-dir", type=Path)
    key_cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")
    key_cmd.set_defaults(handler=_keys)

    from gateway.people import cli as people_cli

    people_cli.add_parser(commands)
    from gateway.operator_cli import add_commands

    add_commands(commands)
    return parser


def _server_flags(parser: argparse.ArgumentParser) -> None:
    for flag, env in FLAG_NAMES.items():
        parser.add_argument(f"--{flag.replace('_', '-')}", dest=flag, help=f"overrides {env}")
    parser.add_argument("--log-file", help="also log to this file (MCP_GATEWAY_LOG_FILE)")
    parser.add_argument(
        "--https",
        dest="https_enabled",
        action="store_const",
        const="true",
        help="overrides MCP_HTTPS_ENABLED",
    )


def _port_file_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port-file",
        type=Path,
        help="write the gateway's listening port here once bound (with --port 0: the "
        "port the system picked)",
    )


def _settings(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    flags = {k: getattr(args, k, None) for k in (*FLAG_NAMES, "https_enabled")}
    return Settings.from_env(os.environ if env is None else env, flags)


def _serve(args: argparse.Namespace) -> int:
    from gateway import port_zero

    if port_zero.wants_any_port(args.port, os.environ) and not _inherits_sockets():
        return _serve_any_port(args)
    settings = _settings(args)
    if args.port_file is not None:
        port_zero.write_port_file(args.port_file, settings.port)
    if settings.workers > 1:
        from gateway.workers import supervise

        return supervise(settings, _worker_env(args))
    from gateway.server import run
    from gateway.workers import inherited_sockets

    run(settings, inherited_sockets(os.environ))
    return 0


def _inherits_sockets() -> bool:
    from gateway.workers import LISTEN_FDS_ENV

    return bool(os.environ.get(LISTEN_FDS_ENV, "").strip())


def _serve_any_port(args: argparse.Namespace) -> int:
    """Port 0: bind first (on the configured host), then read the settings with the bound
    port, so the derived issuer names it; one process (workers would each bind anew)."""
    from gateway import port_zero
    from gateway.server import run

    stand_in = argparse.Namespace(**{**vars(args), "port": "1"})  # only the host is used
    probe = _settings(stand_in)
    if probe.workers > 1:
        raise SettingsError("port 0 is served by one process: set MCP_GATEWAY_WORKERS=1")
    sock = port_zero.bind_any(probe.host)
    port = int(sock.getsockname()[1])
    settings = _settings(argparse.Namespace(**{**vars(args), "port": str(port)}))
    if args.port_file is not None:
        port_zero.write_port_file(args.port_file, port)
    run(settings, [sock])
    return 0


def _worker_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment of a worker: this one, with the command's flags folded in."""
    env = dict(os.environ)
    for flag, name in FLAG_NAMES.items():
        value = getattr(args, flag, None)
        if value is not None:
            env[name] = str(value)
    if getattr(args, "https_enabled", None):
        env["MCP_HTTPS_ENABLED"] = "true"
    if getattr(args, "log_file", None):
        env["MCP_GATEWAY_LOG_FILE"] = str(args.log_file)
    return env


def _certs(args: argparse.Namespace) -> int:
    from gateway.certs import ensure_dev_certs

    made = ensure_dev_certs(args.dir, args.san)
    print(f"CA certificate:     {made.ca_cert}")
    print(f"server certificate: {made.server_cert}")
    print(f"server key:         {made.server_key}")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from gateway.oauth import keys

    settings = Settings.from_env(os.environ, {"state_dir": args.state_dir})
    directory = settings.state_dir / "keys"
    if args.action == "rotate":
        key = keys.rotate(directory, keep_seconds=settings.access_token_ttl + 60)
        print(f"new signing key {key.kid}; restart the gateway (or its replicas) to use it")
    ring = keys.load_or_create(directory)
    rows = [
        {
            "kid": key.kid,
            "algorithm": key.algorithm,
            "created": key.created_at,
            "state": "active" if key is ring.active else f"retired {key.retired_at}",
        }
        for key in ring.keys
    ]
    if args.json:
        import json

        print(json.dumps(rows, indent=2, default=str))
    else:
        from gateway.operator_cli import print_table

        print_table(rows, ["kid", "algorithm", "created", "state"])
    return 0


def _dev(args: argparse.Namespace) -> int:
    from gateway.certs import ensure_dev_certs

    made = ensure_dev_certs(args.certs_dir)
    # SIGTERM (a supervisor, `kill`) stops the backend as SIGINT does: uvicorn re-raises
    # the signal it caught after shutting down, which would otherwise kill this process
    # before the `finally` below runs.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    backend = None
    try:
        from gateway import port_zero

        backend_port = args.backend_port
        if not args.upstream:
            backend, backend_port = _start_backend(args.backend_port, args.state_dir)
        upstream = args.upstream or f"http://127.0.0.1:{backend_port}"
        sockets = [port_zero.bind_any("127.0.0.1")] if args.port == 0 else []
        if sockets:
            args.port = int(sockets[0].getsockname()[1])
        if args.port_file is not None:
            port_zero.write_port_file(args.port_file, args.port)
        env = {
            **os.environ,
            "MCP_HTTPS_ENABLED": "true",
            "MCP_SSL_CERT_FILE": str(made.server_cert),
            "MCP_SSL_KEY_FILE": str(made.server_key),
            "MCP_HTTP_HOST": "127.0.0.1",
            "MCP_HTTP_PORT": str(args.port),
            "MCP_GATEWAY_UPSTREAM": upstream,
            "MCP_GATEWAY_STATE_DIR": str(args.state_dir),
        }
        env.setdefault("MCP_OAUTH_ISSUER", f"https://localhost:{args.port}")
        settings = Settings.from_env(env)
        _print_banner(settings, made.ca_cert, upstream)
        from gateway.server import run

        run(settings, sockets)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if backend is not None:
            backend.terminate()
            backend.wait(timeout=10)
    return 0


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _start_backend(port: int, state_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The backend and the port it listens on (`port` 0: the one it picked)."""
    from gateway import port_zero

    state_dir.mkdir(parents=True, exist_ok=True)
    port_file = state_dir / "backend.port"
    port_file.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "backend",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--db",
        str(state_dir / "memories.db"),
        "--port-file",
        str(port_file),
    ]
    process = subprocess.Popen(command)  # noqa: S603
    try:
        port = port_zero.read_port_file(port_file, lambda: process.poll() is None, 30)
    except RuntimeError as exc:
        process.terminate()
        raise SystemExit(f"the backend did not start: {exc}") from exc
    url = f"http://127.0.0.1:{port}/api/health"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the backend exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return process, port
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"the backend did not answer {url} within 30 s")


def _print_banner(settings: Settings, ca: Path, upstream: str) -> None:
    url = settings.issuer
    print(
        f"""
memory-gateway (development)
  gateway:   {url}   (MCP endpoint {url}/mcp)
  upstream:  {upstream}
  consent:   {settings.consent}
  dev CA:    {ca.resolve()}

Trust the dev CA, then connect a client:
  curl --cacert {ca} {url}/.well-known/oauth-authorization-server/mcp
  NODE_EXTRA_CA_CERTS={ca.resolve()} claude mcp add --transport http memory {url}/mcp
""",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
