"""Test servers for Client ID Metadata Documents (PROTOCOL R6).

`DocumentServer`: an HTTPS server on loopback, certificate from a trustme CA, serving
JSON documents by path. `in_process_gateway`: the real gateway (`create_app`) under
uvicorn over HTTPS, with a `ClientMetadataResolver` that trusts that CA: the settings
offer no way to give the `memory-gateway serve` process a private CA for these fetches
(see docs/clients.md), so the composition root's `client_resolver` seam is used.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import trustme

from gateway.oauth.client_metadata import ClientMetadataResolver
from tests.integration.live import LiveGateway, in_process_stack


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
    resolver = ClientMetadataResolver(allow_private=True, verify=trusted)
    env = {"MCP_OAUTH_CIMD_ALLOW_PRIVATE": "true"}
    with in_process_stack(root, env, client_resolver=resolver) as gateway:
        yield gateway
