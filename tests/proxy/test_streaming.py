"""P3: streams pass through unbuffered and with bounded memory."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.proxy.conftest import DUAL_PATH_OVERRIDES, Server, bearer, start_gateway_process

MB = 1024 * 1024


@pytest.fixture(scope="module", params=["fast", "asgi"])
def gateway(upstream: Server, request: pytest.FixtureRequest) -> Iterator[Server]:
    """In its own process, unlike conftest's: these tests measure the gateway's memory,
    and the SSE delay is the gateway's alone, not shared with the test's threads."""
    server = start_gateway_process(upstream.url, *DUAL_PATH_OVERRIDES, f"protocol={request.param}")
    yield server
    server.stop()


def test_p3_sse_events_arrive_one_by_one_as_emitted(client: httpx.Client) -> None:
    delays: list[float] = []
    with client.stream("GET", "/api/sse?n=5&interval=0.2", headers=bearer("read")) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        buffer = ""
        for text in response.iter_text():
            arrived = time.time()
            buffer += text
            while "\n\n" in buffer:
                event, buffer = buffer.split("\n\n", 1)
                emitted = float(event.split("data: ", 1)[1])
                delays.append(arrived - emitted)
    assert len(delays) == 5
    assert max(delays) < 0.05, delays  # far below the 0.2 s between events


def test_p3_100mb_download_streams_with_bounded_gateway_memory(
    client: httpx.Client, gateway: Server
) -> None:
    before = gateway.rss_kib()
    peak = before
    received = 0
    with client.stream("GET", f"/api/download?size={100 * MB}", headers=bearer("read")) as response:
        assert response.headers["content-length"] == str(100 * MB)
        for chunk in response.iter_raw(1 * MB):
            received += len(chunk)
            peak = max(peak, gateway.rss_kib())
    assert received == 100 * MB
    assert (peak - before) < 30 * 1024, f"RSS grew by {(peak - before) // 1024} MiB"


def test_p3_100mb_upload_streams_with_bounded_gateway_memory(
    client: httpx.Client, gateway: Server
) -> None:
    before = gateway.rss_kib()
    peak = [before]

    def body() -> Iterator[bytes]:
        chunk = b"u" * MB
        for i in range(100):
            if i % 5 == 0:
                peak[0] = max(peak[0], gateway.rss_kib())
            yield chunk

    response = client.post(
        "/api/memories",
        content=body(),
        headers={**bearer("write"), "Content-Length": str(100 * MB)},
    )
    assert response.status_code == 200
    assert response.json()["body_size"] == 100 * MB
    assert (peak[0] - before) < 30 * 1024, f"RSS grew by {(peak[0] - before) // 1024} MiB"
