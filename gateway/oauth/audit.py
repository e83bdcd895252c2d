"""OAuth audit events: one log line per decision, on the `gateway.oauth` logger.

Lines name clients, grants, scopes and addresses; never a token, code, secret or key.
`grep -i oauth` over the gateway's log finds them all. Values a client chose (error
descriptions quoting its input, names) are rendered with repr(), so a newline or escape
sequence in them can never start a forged line.
"""

from __future__ import annotations

import logging

from starlette.requests import Request

from gateway.errors import GatewayError

audit = logging.getLogger("gateway.oauth")


def peer(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def log_refusal(request: Request, error: GatewayError, *, status: int | None = None) -> None:
    """One line per refusal, with the status actually sent (`status` when a rule fixes
    it, as A1 does, else the error's own)."""
    audit.info(
        "oauth %s %r refused: %d %s: %r (from %s)",
        request.method,
        request.url.path,
        error.status_code if status is None else status,
        error.error,
        error.description,
        peer(request),
    )
