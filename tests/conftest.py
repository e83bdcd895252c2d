import pytest

from tests.clock import Clock


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> Clock:
    """A settable clock starting at `tests.clock.START` (the one clock fixture)."""
    return Clock()
