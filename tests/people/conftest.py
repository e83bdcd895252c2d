"""One gateway signing people in through a real oidc-provider, for the whole module set."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.people.support import PeopleStack, people_stack


@pytest.fixture(scope="session")
def people(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeopleStack]:
    with people_stack(tmp_path_factory.mktemp("people")) as stack:
        yield stack
