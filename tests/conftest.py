import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, why: str) -> None:
    """A missing service fails in CI and skips on a developer's machine."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"CI needs this: {why}")
    pytest.skip(why)
