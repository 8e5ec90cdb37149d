"""The stacks buildpack: re-push after a one-line change of the Python and
Node samples (no Dockerfile: one generated from the stack's template) beside
the same app with a hand-written Dockerfile, pushed to the same gitd in the
same run; and the runtime image size per stack beside its base image.

    python bench/stacks.py [--rounds 3]

Base images: no registry is reachable here, so gitd maps [base_images] to the
stack images .ci/images builds from Debian's packages (tests/e2e/
stack_samples.py), and image sizes are shown beside those local images, not
beside the official `-slim` ones (which cannot be pulled here).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import bench_gitd, wait_answer

from tests.e2e import stack_samples
from tests.e2e.harness import commit, make_repo, unique_app

HAND_WRITTEN = {
    "python": (
        f"FROM {stack_samples.BASE_IMAGES['python']}\n"
        "RUN python3 -m venv /venv\nENV PATH=/venv/bin:$PATH\n"
        "COPY requirements.txt /tmp/requirements.txt\n"
        "RUN pip install --no-cache-dir -r /tmp/requirements.txt\n"
        "WORKDIR /app\nCOPY . /app\n"
        'CMD ["/bin/sh", "-c", "exec gunicorn --bind 0.0.0.0:$PORT app:app"]\n'),
    "node": (
        f"FROM {stack_samples.BASE_IMAGES['node']}\n"
        "WORKDIR /app\nCOPY package.json package-lock.json ./\nRUN npm ci --omit=dev\n"
        'COPY . /app\nCMD ["npm", "start"]\n'),
}


def live_after_push(gitd, repo: Path, app: str, expected: str) -> float:
    started = time.monotonic()
    push = subprocess.Popen(["git", "push", "-q", gitd.remote(app), "main"], cwd=repo,
                            env=gitd.git_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_answer(gitd.http_port, gitd.host(app), expected, timeout=120)
    took = time.monotonic() - started
    _, err = push.communicate(timeout=300)
    if push.returncode != 0:
        raise SystemExit(err.decode())
    return took


def repush(gitd, tmp: Path, stack: str, rounds: int) -> tuple[list[float], list[float]]:
    """Seconds from `git push` of a one-line change until it answers, for the
    stack sample and its hand-written-Dockerfile twin, rounds interleaved."""
    apps = {}
    for kind in ("stack", "hand"):
        app = unique_app(f"b{kind}{stack}")
        assert gitd.ssh("apps:create", app).returncode == 0
        assert gitd.ssh("checks:set", app, "drain=0").returncode == 0
        files = stack_samples.files(stack, "v0")
        if kind == "hand":
            files["Dockerfile"] = HAND_WRITTEN[stack]
        apps[kind] = (app, make_repo(tmp / app, files))
        assert gitd.push(apps[kind][1], app, timeout=600).returncode == 0  # warms the caches
    times: dict[str, list[float]] = {"stack": [], "hand": []}
    for n in range(1, rounds + 1):
        for kind, (app, repo) in apps.items():
            files = stack_samples.files(stack, f"v{n}")  # the one line that says the version
            if kind == "hand":
                files["Dockerfile"] = HAND_WRITTEN[stack]
            commit(repo, files, f"v{n}")
            times[kind].append(live_after_push(gitd, repo, app, f"v{n}"))
    for app, _ in apps.values():
        gitd.ssh("apps:destroy", app, "--force")
    return times["stack"], times["hand"]


def image_sizes(gitd, client, tmp: Path) -> list[tuple[str, int, str, int, int]]:
    rows = []
    for stack in stack_samples.SAMPLES:
        app = unique_app(f"size{stack}")
        assert gitd.ssh("apps:create", app).returncode == 0
        repo = make_repo(tmp / app, stack_samples.files(stack, "size"))
        result = gitd.push(repo, app, timeout=600)
        if result.returncode != 0:
            raise SystemExit(result.stderr)
        size = client.images.get(f"gitd/{app}:v1").attrs["Size"]
        role = {"go": "runtime", "rust": "runtime"}.get(stack, stack)
        base = stack_samples.BASE_IMAGES[role]
        build = stack_samples.BASE_IMAGES.get(stack, base)  # where it compiled
        rows.append((stack, size, base, client.images.get(base).attrs["Size"],
                     client.images.get(build).attrs["Size"]))
        gitd.ssh("apps:destroy", app, "--force")
    return rows


def fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, \
            bench_gitd(Path(tmp), config=stack_samples.GITD_TOML) as (gitd, client):
        results = {stack: repush(gitd, Path(tmp), stack, args.rounds)
                   for stack in ("python", "node")}
        sizes = image_sizes(gitd, client, Path(tmp))
    for stack, (generated, hand) in results.items():
        g, h = statistics.median(generated), statistics.median(hand)
        print(f"\n{stack}: re-push of a one-line change until it answers (median of {args.rounds}):")
        print(f"  stacks buildpack (generated Dockerfile): {g:6.2f} s  {fmt(generated)}")
        print(f"  hand-written Dockerfile, same gitd:      {h:6.2f} s  {fmt(hand)}")
        print(f"  ratio stacks / hand-written: {g / h:.2f} (target <= 1.3)")
    print("\nruntime image size per stack, beside the base image it runs on "
          "(local Debian-built images here: the official -slim ones cannot be pulled):")
    for stack, size, base, base_size, build_size in sizes:
        print(f"  {stack:<7} {size / 1e6:7.1f} MB   base {base:<28} {base_size / 1e6:7.1f} MB"
              f"   ratio {size / base_size:.2f}   (build image {build_size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
