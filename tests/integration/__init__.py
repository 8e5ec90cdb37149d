"""Tests of gitd's parts against the real tools they drive, without a running
gitd: nix builds and evaluations, Docker images, the wheel and sdist built
by setuptools. Slower than tests/unit, which needs none of these."""
