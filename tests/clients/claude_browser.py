"""A stand-in for the person at the browser, for `claude mcp login` (BROWSER=...).

Called with the authorization URL: follows it (the gateway's auto consent answers with
a redirect to Claude Code's loopback callback) and delivers that redirect to the
callback. Only loopback URLs are followed; every step has a timeout. Each URL it is
given and each redirect is appended to the file named by CLAUDE_BROWSER_LOG.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit

import httpx

LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOOPBACK


def main(url: str) -> int:
    log = os.environ.get("CLAUDE_BROWSER_LOG")

    def note(line: str) -> None:
        if log:
            with open(log, "a", encoding="utf-8") as out:
                out.write(line + "\n")

    note(url)
    if not loopback(url):
        note("refused: not a loopback URL")
        return 2
    answer = httpx.get(url, follow_redirects=False, timeout=15)
    location = answer.headers.get("location", "")
    note(f"{answer.status_code} -> {location}")
    if answer.status_code not in (302, 303) or not loopback(location):
        return 1
    delivered = httpx.get(location, follow_redirects=False, timeout=15)
    note(f"callback {delivered.status_code}")
    return 0 if delivered.status_code < 400 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
