"""The benchmark's backend: a ~1.3 KB JSON list on Starlette (docs/performance.md's baseline), plus
the test upstream's SSE, download and stall routes for the streaming measurements.

Run: python -m bench.backend PORT
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from tests.proxy import upstream_app

MEMORIES = [
    {"id": i, "content": f"memory number {i} about the project", "tags": ["bench", "x"]}
    for i in range(16)
]


async def memories(request: object) -> JSONResponse:
    return JSONResponse(MEMORIES)


app = Starlette(
    routes=[Route("/api/memories", memories), Mount("/", app=upstream_app.app)],
)

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
