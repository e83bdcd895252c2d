"""Issue 9 at the default budgets: idle and partial heads closed within 30 s, trickled
bodies within 60 s, a bystander answered within 1 s meanwhile (one run, ~30 s, the
slow connections in parallel)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.edge import EdgeLimits
from tests.edge.support import Bystander, RssWatch, closed_within, connect, serve, trickle

HEAD = b"GET /api/memories HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100


def test_slow_connections_are_closed_at_the_default_budgets(tmp_path: Path) -> None:
    limits = EdgeLimits()
    assert limits.head_timeout == 10
    assert limits.body_timeout == 30
    with serve(tmp_path) as gateway, RssWatch(gateway) as rss, Bystander(gateway) as bystander:

        def silent() -> float:
            return closed_within(connect(gateway), 30)[0]

        def partial() -> float:
            sock = connect(gateway)
            sock.sendall(b"GET /api/memories HTTP/1.1\r\nHost: x\r\n")
            took, answer = closed_within(sock, 30)
            assert answer.startswith(b"HTTP/1.1 408 ")
            return took

        def trickled_head() -> float:
            return trickle(connect(gateway), HEAD, 2.0, 30)

        def trickled_body() -> float:
            sock = connect(gateway)
            sock.sendall(
                b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
            )
            return trickle(sock, b"a" * 100, 5.0, 60)  # a byte every 5 s, as reported

        with ThreadPoolExecutor(4) as pool:
            runs = [pool.submit(f) for f in (silent, partial, trickled_head, trickled_body)]
            silent_s, partial_s, head_s, body_s = (run.result(timeout=90) for run in runs)
    assert 9 < silent_s < 30
    assert 9 < partial_s < 30
    assert head_s < 30
    assert 25 < body_s < 60
    bystander.check(1.0)
    assert rss.growth < 64
