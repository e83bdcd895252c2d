"""Issue 9: what the consent page shows cannot be disguised."""

from __future__ import annotations

import pytest

from gateway.oauth.consent import consent_page, display_text, shown_host


@pytest.mark.parametrize(
    "name",
    ["Claude\u202e edoC", "a\u2066b\u2069", "x\u200by", "l\u2028m", "t\u0007u", "\u061cq"],
)
def test_bidi_and_invisible_characters_are_neutralised(name: str) -> None:
    shown = display_text(name)
    assert "\ufffd" in shown
    for c in "\u202e\u2066\u2069\u200b\u2028\u0007\u061c":
        assert c not in shown


def test_ordinary_names_are_unchanged() -> None:
    assert display_text("Claude Code - Ünïcode 日本") == "Claude Code - Ünïcode 日本"


def test_percent_encoded_host_is_shown_decoded() -> None:
    assert shown_host("https://%65vil.example/cb") == "evil.example"
    assert shown_host("https://app.example:8443/cb") == "app.example:8443"


def test_consent_page_shows_the_neutralised_name_and_decoded_host() -> None:
    page = consent_page(
        consent_id="c1",
        client_name="Good\u202eliveE",
        redirect_uri="https://%65vil.example/cb",
        scope="read",
    )
    text = bytes(page.body).decode()
    assert "\u202e" not in text
    assert "Good\ufffdliveE" in text
    assert "<strong>evil.example</strong>" in text
