import pytest

# the fixtures every unit test may ask for, defined with the other shared fakes
from tests.fakes import fake, store  # noqa: F401

NO_DOCKER = "unix:///nonexistent/unit-tests-reach-no-docker-engine.sock"


@pytest.fixture(autouse=True)
def no_docker_engine(monkeypatch):
    """Unit tests run where no Docker engine does: one that reaches for it
    fails here too, not only on a machine without Docker."""
    monkeypatch.setenv("DOCKER_HOST", NO_DOCKER)
