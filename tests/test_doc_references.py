"""Every reference in the code and docs resolves inside the repository.

- `PROTOCOL X1` / `rule X1` citations name a rule of docs/protocol.md;
- a file named `something.md` (with or without a directory) exists, relative to the
  repository root or to the citing file;
- a relative Markdown link `[text](target)` points at an existing file;
- nothing points outside the repository (`../shared/...`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("gateway", "backend", "bench", "tests", "scripts", "docs", "certs")
TOP = ("README.md", "CHANGELOG.md", "Dockerfile", "compose.yaml", "pyproject.toml")

_CITATION = re.compile(r"\bPROTOCOL((?:(?:,\s*|\s+and\s+|\s+|/)[A-Z][0-9]{1,2}\b)+)")
_RULE = re.compile(r"\brules?\s+([A-Z][0-9]{1,2})\b")
_RULE_ID = re.compile(r"[A-Z][0-9]{1,2}")
_DEFINED = re.compile(r"^- \*\*([A-Z][0-9]{1,2})\*\*", re.MULTILINE)
_MD_FILE = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.md)\b")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def sources() -> Iterator[Path]:
    for name in TOP:
        if (ROOT / name).is_file():
            yield ROOT / name
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*")):
            if "node_modules" in path.parts or "__pycache__" in path.parts:
                continue
            if path == Path(__file__):
                continue  # its own examples are broken on purpose
            if path.is_file() and path.suffix in {".py", ".md", ".mjs", ".sh", ""}:
                yield path


def defined_rules() -> set[str]:
    return set(_DEFINED.findall((ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")))


def cited_rules(text: str) -> set[str]:
    cited = {rule for match in _CITATION.finditer(text) for rule in _RULE_ID.findall(match[1])}
    return cited | set(_RULE.findall(text))


def _resolves(target: str, citing: Path) -> bool:
    return (ROOT / target).exists() or (citing.parent / target).exists()


def broken_references(path: Path, rules: set[str]) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    where = path.relative_to(ROOT)
    broken = [
        f"{where}: PROTOCOL {rule} is not in docs/protocol.md"
        for rule in sorted(cited_rules(text) - rules)
    ]
    for target in sorted(set(_MD_FILE.findall(text))):
        if not _resolves(target, path):
            broken.append(f"{where}: {target} does not exist")
    if path.suffix == ".md":
        for link in sorted(set(_LINK.findall(text))):
            if re.match(r"[a-z][a-z0-9+.-]*:", link) or link.startswith("#"):
                continue
            if not _resolves(link.split("#", 1)[0], path):
                broken.append(f"{where}: link {link} does not exist")
    if "../shared/" in text:
        broken.append(f"{where}: points outside the repository (../shared/)")
    return broken


def test_the_rules_are_numbered_as_cited() -> None:
    rules = defined_rules()
    assert {"D1", "D8", "R1", "R6", "A1", "A7", "T1", "T7", "J1", "J4", "P1", "P6"} <= rules


def test_every_reference_resolves() -> None:
    rules = defined_rules()
    broken = [line for path in sources() for line in broken_references(path, rules)]
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PROTOCOL A1: no redirect", {"A1"}),
        ("(PROTOCOL T4, T5, T7)", {"T4", "T5", "T7"}),
        ("PROTOCOL P1, P6 and J3.", {"P1", "P6", "J3"}),
        ("see rule Z9 below", {"Z9"}),
        ("PROTOCOLS are fine; A1 alone is not a citation", set()),
    ],
)
def test_citations_are_found(text: str, expected: set[str]) -> None:
    assert cited_rules(text) == expected


def test_a_broken_reference_is_reported(tmp_path: Path) -> None:
    citing = ROOT / "docs" / "protocol.md"
    text = "PROTOCOL Q7, see docs/NOWHERE.md and [x](missing.png)"
    fake = tmp_path / "fake.md"
    fake.write_text(text)
    assert not _resolves("docs/NOWHERE.md", citing)
    assert cited_rules(text) - defined_rules() == {"Q7"}
    assert _MD_FILE.findall(text) == ["docs/NOWHERE.md"]
