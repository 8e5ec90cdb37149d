"""The test suite's own rules (issue #22): unit tests reach no Docker engine,
they run before the slow folders, and unit and integration test modules
share helpers through tests/fakes.py rather than importing one another."""

import ast
from pathlib import Path
from types import SimpleNamespace

import docker
import pytest

from gitd.core.errors import GitdError
from hooks import engine
from tests.conftest import TESTS, pytest_collection_modifyitems


def test_a_unit_test_reaches_no_docker_engine():
    with pytest.raises(docker.errors.DockerException):
        docker.from_env().ping()
    with pytest.raises(GitdError, match="cannot reach the Docker engine"):
        engine.connect()


def test_unit_tests_run_first_then_integration_then_e2e():
    names = ["e2e/test_push.py", "unit/test_store.py", "integration/test_flake.py",
             "e2e/test_admin.py", "unit/test_config.py", "nix/fixtures.py"]
    items = [SimpleNamespace(path=TESTS / name) for name in names]
    pytest_collection_modifyitems(items)
    assert [item.path.relative_to(TESTS).as_posix() for item in items] == [
        "unit/test_store.py", "unit/test_config.py", "integration/test_flake.py",
        "e2e/test_push.py", "e2e/test_admin.py", "nix/fixtures.py"]


def imported_test_modules(source: Path) -> set[str]:
    """The test modules (tests.<folder>.test_*) that `source` imports."""
    found = set()
    for node in ast.walk(ast.parse(source.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        found |= {n for n in names if n.startswith("tests.") and
                  n.rsplit(".", 1)[-1].startswith("test_")}
    return found


def test_no_test_module_imports_another_test_module():
    sources = [*TESTS.glob("*/test_*.py"), *TESTS.glob("*/*helpers.py"), *TESTS.glob("*/conftest.py")]
    offenders = {source.relative_to(TESTS).as_posix(): found
                 for source in sources if (found := imported_test_modules(source))}
    assert offenders == {}, ("shared fakes belong in tests/fakes.py, e2e helpers in "
                             "tests/e2e/helpers.py (or api_client, services_helpers, acme_helpers)")


def test_the_import_check_finds_both_spellings(tmp_path):
    source = tmp_path / "test_x.py"
    source.write_text("import tests.e2e.test_push\nfrom tests.unit.test_dynos import Container\n"
                      "from tests.fakes import call\nfrom tests.e2e import harness\n")
    assert imported_test_modules(source) == {"tests.e2e.test_push", "tests.unit.test_dynos"}
