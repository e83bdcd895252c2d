"""Test servers for Client ID Metadata Documents (PROTOCOL R6).

`DocumentServer`: an HTTPS server on loopback, certificate from a trustme CA, serving
JSON documents by path. `in_process_gateway`: the real gateway (`create_app`) under
uvicorn over HTTPS, with a `ClientMetadataResolver` that trusts that CA: the settings
offer no way to give the `memory-gateway serve` process a private CA for these fetches
(see docs/clients.md), so the composition root's `client_resolver` seam is used.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import trustme
import uvicorn

from gateway.app import create_app
from gateway.certs import ensure_dev_certs
from gateway.oauth.client_metadata import ClientMetadataResolver
from gateway.settings import Settings
from tests.integration.live import LiveGateway, free_port, running


class DocumentServer:
    def __init__(self, ca: trustme.CA) -> None:
        self.ca = ca
        self.documents: dict[str, object] = {}
        self.fetches: list[str] = []
        documents, fetches = self.documents, self.fetches

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fetches.append(self.path)
                if self.path not in documents:
                    self.send_error(404)
                    return
                body = json.dumps(documents[self.path]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.origin = f"https://localhost:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return f"{self.origin}{path}"

    @contextmanager
    def serving(self) -> Iterator[DocumentServer]:
        thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.httpd.shutdown()
            self.httpd.server_close()


@contextmanager
def in_process_gateway(root: Path, trusted: ssl.SSLContext) -> Iterator[LiveGateway]:
    """Backend as a subprocess, gateway in this process, trusting `trusted` for CIMD."""
    backend_port, port = free_port(), free_port()
    backend_url = f"http://127.0.0.1:{backend_port}"
    backend = [sys.executable, "-m", "backend", "--host", "127.0.0.1"]
    backend += ["--port", str(backend_port), "--db", str(root / "memories.db")]
    certs = ensure_dev_certs(root / "certs")
    url = f"https://localhost:{port}"
    settings = Settings.from_env(
        {
            "MCP_HTTP_HOST": "127.0.0.1",
            "MCP_HTTP_PORT": str(port),
            "MCP_OAUTH_ISSUER": url,
            "MCP_GATEWAY_UPSTREAM": backend_url,
            "MCP_GATEWAY_STATE_DIR": str(root / "state"),
            "MCP_OAUTH_CONSENT": "auto",
            "MCP_OAUTH_CIMD_ALLOW_PRIVATE": "true",
            "MCP_OAUTH_RATE_LIMIT_PER_MINUTE": "0",
        }
    )
    resolver = ClientMetadataResolver(allow_private=True, verify=trusted)
    config = uvicorn.Config(
        create_app(settings, client_resolver=resolver),
        host="127.0.0.1",
        port=port,
        ssl_certfile=os.fspath(certs.server_cert),
        ssl_keyfile=os.fspath(certs.server_key),
        lifespan="on",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    with running(backend, {}, f"{backend_url}/api/health", True):
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 20
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the in-process gateway did not start")
                time.sleep(0.05)
            verify = ssl.create_default_context(cafile=str(certs.ca_cert))
            yield LiveGateway(url, certs.ca_cert, verify, None, backend_url, root / "state")
        finally:
            server.should_exit = True
            thread.join(timeout=15)
