"""Run with mcp-memory-service's own Python: prints its web app's routes as JSON lines.

`{"methods": [...], "path": "/api/...", "needs": "read"|"write"|"admin"|"none"|"static"}`,
`needs` from the FastAPI dependencies each route declares (require_read_access, ...).
tests/upstream compares this with the gateway's default policy, and docs/policy.md's
table of upstream routes was made from it.
"""

import json
import sys
from typing import Any

from fastapi.routing import APIRoute
from mcp_memory_service.web.app import app
from starlette.routing import Mount

SCOPES = {
    "require_read_access": "read",
    "require_write_access": "write",
    "require_admin_access": "admin",
}
ORDER = ("admin", "write", "read")


def needs(dependant: object) -> set[str]:
    found: set[str] = set()
    call = getattr(dependant, "call", None)
    name = getattr(call, "__name__", "")
    if name in SCOPES:
        found.add(SCOPES[name])
    for sub in getattr(dependant, "dependencies", []):
        found |= needs(sub)
    return found


def walk(routes: list[Any], prefix: str) -> None:
    for route in routes:
        inner = getattr(route, "original_router", None)  # FastAPI >= 0.16x include_router
        if inner is not None:
            walk(inner.routes, prefix + route.include_context.prefix)
        elif isinstance(route, APIRoute):
            found = needs(route.dependant)
            scope = next((s for s in ORDER if s in found), "none")
            methods = sorted(m for m in route.methods if m != "HEAD")
            print(json.dumps({"methods": methods, "path": prefix + route.path, "needs": scope}))
        elif isinstance(route, Mount):
            print(
                json.dumps(
                    {"methods": ["GET"], "path": prefix + route.path + "/*", "needs": "static"}
                )
            )
        else:
            methods = sorted(m for m in (getattr(route, "methods", None) or ["GET"]) if m != "HEAD")
            print(json.dumps({"methods": methods, "path": prefix + route.path, "needs": "none"}))


walk(app.routes, "")
sys.stdout.flush()
