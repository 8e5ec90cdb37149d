"""The templates the code loads are in the package directories, and every
template name the code holds is one a loader finds. The list is derived from
the code, not kept by hand (tests/fakes.py: loaded_files). That the wheel and
the sdist hold them: tests/integration/test_packaging.py."""

import ast

from tests.fakes import PACKAGES, REPO, environments, loaded_files


def test_the_code_loads_templates_from_the_package_directories():
    files = loaded_files()
    assert "gitd/templates/traefik.yml.j2" in files
    assert "buildpacks/templates/stacks/python.Dockerfile.j2" in files
    assert all(f.split("/")[0] in PACKAGES for f in files), files


def test_every_template_the_code_names_is_there():
    """A template name in the code ("static.Dockerfile.j2") that no loader
    finds would only fail at run time."""
    listed = {name.rsplit("/", 1)[-1] for env in environments().values()
              for name in env.list_templates()}
    named = set()
    for package in PACKAGES:
        for source in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and node.value.endswith(".j2"):
                    named.add(node.value)
    assert named and named <= listed, named - listed
