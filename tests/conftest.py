import pytest


def require(condition: bool, why: str) -> None:
    """A missing service fails the test, in CI and on a developer's machine
    alike: `bash .ci/setup` installs and starts everything the suite needs."""
    if not condition:
        pytest.fail(f"{why} (run `bash .ci/setup` first)")
