from pathlib import Path

import pytest

TESTS = Path(__file__).parent


def require(condition: bool, why: str) -> None:
    """A missing service fails the test, in CI and on a developer's machine
    alike: `bash .ci/setup` installs and starts everything the suite needs."""
    if not condition:
        pytest.fail(f"{why} (run `bash .ci/setup` first)")


def run_order(path: Path) -> int:
    """tests/unit first, then tests/integration, then the rest (e2e)."""
    for rank, folder in enumerate(("unit", "integration")):
        if path.is_relative_to(TESTS / folder):
            return rank
    return 2


def pytest_collection_modifyitems(items):
    # a broken unit test fails in the first minute, not after the e2e suite;
    # the sort is stable, so each folder keeps pytest's own order
    items.sort(key=lambda item: run_order(item.path))
