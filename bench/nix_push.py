"""A Nix flake app pushed to gitd beside the same program as a Dockerfile
app: push-to-live time of a first push and of a push after a one-line
change, the layers the second push reuses, and the image sizes.

Both apps are busybox httpd serving the same index.html and style.css on
$PORT. The flake's closure (busybox, the assets, the app) becomes one layer
per store path; the Dockerfile builds FROM a scratch + busybox base made
here. Every first push of the flake starts from store paths new to Nix and
Docker (a salt in each derivation), so it builds and loads everything.

    python bench/nix_push.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from common import BASE_IMAGE, bench_gitd

from tests.e2e.harness import commit, make_repo, unique_app
from tests.nix import fixtures

LAYERS = re.compile(r"image: (\d+) layers? \((\d+) reused\)")
CACHED = re.compile(r"---> Using cache")
STYLE = "body { color: teal }\n"  # the flake's assets, byte for byte


def dockerfile_files(message: str) -> dict:
    return {
        "Dockerfile": (
            f"FROM {BASE_IMAGE}\nRUN mkdir -p /www\nCOPY style.css /www/style.css\n"
            "COPY index.html /www/index.html\n"
            'CMD ["sh", "-c", "exec httpd -f -p \\"${PORT:-5000}\\" -h /www"]\n'),
        "style.css": STYLE,
        "index.html": f"{message}\n",
    }


@dataclass
class Push:
    live: float  # seconds from `git push` until the new version answers via Traefik
    returned: float  # until `git push` returned
    output: str


@dataclass
class Round:
    first: Push
    second: Push
    layers: list[tuple[int, int]] = field(default_factory=list)  # (total, shared with v1) of v1, v2
    sizes: list[int] = field(default_factory=list)  # image bytes of v1, v2


def answers(port: int, host: str, expected: str) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/", headers={"Host": host})
        body = conn.getresponse().read().decode(errors="replace")
        conn.close()
        return expected in body
    except (OSError, http.client.HTTPException):
        return False


def timed_push(gitd, repo: Path, app: str, expected: str, timeout: float = 180) -> Push:
    """Push and poll (every 20 ms, bounded) until `expected` is served."""
    started = time.monotonic()
    push = subprocess.Popen(["git", "push", gitd.remote(app), "main"], cwd=repo,
                            env=gitd.git_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    live = None
    deadline = started + timeout
    while time.monotonic() < deadline:
        if answers(gitd.http_port, gitd.host(app), expected):
            live = time.monotonic() - started
            break
        if push.poll() is not None and push.returncode != 0:
            break
        time.sleep(0.02)
    try:
        _, err = push.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        push.kill()
        _, err = push.communicate()
    output = err.decode(errors="replace")
    if push.returncode != 0 or live is None:
        raise SystemExit(f"push of {app} failed or never served {expected!r}:\n{output}")
    return Push(live=live, returned=time.monotonic() - started, output=output)


def image_facts(client, app: str) -> tuple[list[tuple[int, int]], list[int]]:
    """Layers of v1 and v2 (and how many v2 shares with v1), and their sizes."""
    v1, v2 = (client.images.get(f"gitd/{app}:v{n}") for n in (1, 2))
    l1, l2 = (img.attrs["RootFS"]["Layers"] for img in (v1, v2))
    shared = sum(1 for d in l2 if d in set(l1))
    return [(len(l1), len(l1)), (len(l2), shared)], [int(v1.attrs["Size"]), int(v2.attrs["Size"])]


def store_paths(gc_root: Path) -> list[str]:
    if not gc_root.is_symlink():
        return []
    out = subprocess.run(["nix-store", "--query", "--requisites", str(gc_root)],
                         capture_output=True, text=True)
    return out.stdout.split() if out.returncode == 0 else []


def nix_round(gitd, client, tmp: Path, made_paths: set[str]) -> Round:
    app = unique_app("nixbench")
    assert gitd.ssh("apps:create", app).returncode == 0
    try:
        salt = uuid.uuid4().hex
        source = fixtures.write_web_flake(tmp / app, message="nix v1", store_salt=salt)
        repo = make_repo(source, {})
        first = timed_push(gitd, repo, app, "nix v1")
        fixtures.write_web_flake(source, message="nix v2", store_salt=salt)  # one line changes
        commit(repo, {}, "v2")
        second = timed_push(gitd, repo, app, "nix v2")
        layers, sizes = image_facts(client, app)
        for version in (1, 2):
            made_paths.update(store_paths(gitd.data_dir / "gcroots" / app / f"v{version}"))
        return Round(first, second, layers, sizes)
    finally:
        gitd.ssh("apps:destroy", app, "--force")


def dockerfile_round(gitd, client, tmp: Path) -> Round:
    app = unique_app("dfbench")
    assert gitd.ssh("apps:create", app).returncode == 0
    try:
        repo = make_repo(tmp / app, dockerfile_files("docker v1"))
        first = timed_push(gitd, repo, app, "docker v1")
        commit(repo, {"index.html": "docker v2\n"}, "v2")  # one line changes
        second = timed_push(gitd, repo, app, "docker v2")
        layers, sizes = image_facts(client, app)
        return Round(first, second, layers, sizes)
    finally:
        gitd.ssh("apps:destroy", app, "--force")


def delete_store_paths(paths: set[str]) -> int:
    """Remove the store paths this run made, now that their GC roots are gone
    (nix refuses any path something else still holds)."""
    if not paths or not shutil.which("nix-store"):
        return 0
    before = sum(1 for p in paths if Path(p).exists())
    subprocess.run(["nix-store", "--delete", *sorted(paths)], capture_output=True)
    return before - sum(1 for p in paths if Path(p).exists())


def med(values: list[float]) -> float:
    return statistics.median(values)


def fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def mb(size: float) -> str:
    return f"{size / 1e6:.2f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="apps of each kind (default 3)")
    args = parser.parse_args()
    if not shutil.which("nix"):
        raise SystemExit("nix is not installed (apt-get install nix-bin)")
    rounds = max(1, min(args.rounds, 20))
    made_paths: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp, bench_gitd(Path(tmp)) as (gitd, client):
        tmp = Path(tmp)
        nix = [nix_round(gitd, client, tmp, made_paths) for _ in range(rounds)]
        docker = [dockerfile_round(gitd, client, tmp) for _ in range(rounds)]
    deleted = delete_store_paths(made_paths)

    reused = [int(LAYERS.search(r.second.output).group(2)) for r in nix]
    total = [int(LAYERS.search(r.second.output).group(1)) for r in nix]
    first_reused = [int(LAYERS.search(r.first.output).group(2)) for r in nix]
    cached = [len(CACHED.findall(r.second.output)) for r in docker]
    rows = [
        ("first push to live (s)", [r.first.live for r in nix], [r.first.live for r in docker]),
        ("second push to live (s)", [r.second.live for r in nix], [r.second.live for r in docker]),
        ("second push returns (s)", [r.second.returned for r in nix],
         [r.second.returned for r in docker]),
        ("image size v1 (MB)", [r.sizes[0] / 1e6 for r in nix], [r.sizes[0] / 1e6 for r in docker]),
        ("image size v2 (MB)", [r.sizes[1] / 1e6 for r in nix], [r.sizes[1] / 1e6 for r in docker]),
    ]
    print(f"\nnix flake vs Dockerfile, same busybox httpd app (median of {rounds} apps each)")
    print(f"  {'':26} {'nix':>9} {'Dockerfile':>11} {'nix/Dockerfile':>15}")
    for name, n, d in rows:
        print(f"  {name:26} {med(n):9.2f} {med(d):11.2f} {med(n) / med(d):15.2f}")
    shared_nix = [r.layers[1][1] for r in nix]
    shared_df = [r.layers[1][1] for r in docker]
    layers_df = [r.layers[1][0] for r in docker]
    print(f"  {'layers of v2':26} {med(total):9.0f} {med(layers_df):11.0f}")
    print(f"  {'layers shared with v1':26} {med(shared_nix):9.0f} {med(shared_df):11.0f}")
    print("\nnix, second push: layers reused as the push output says "
          f"(`image: N layers (K reused)`): {reused} of {total}; first push: {first_reused}")
    print(f"Dockerfile, second push: build steps from cache: {cached}")
    print("\nper app:")
    print(f"  nix first push to live        {fmt([r.first.live for r in nix])}")
    print(f"  nix second push to live       {fmt([r.second.live for r in nix])}")
    print(f"  Dockerfile first push to live {fmt([r.first.live for r in docker])}")
    print(f"  Dockerfile second push        {fmt([r.second.live for r in docker])}")
    print(f"  nix image sizes v1            {[mb(r.sizes[0]) for r in nix]}")
    print(f"  Dockerfile image sizes v1     {[mb(r.sizes[0]) for r in docker]}")
    print(f"\nratios (medians): second/first push to live: nix "
          f"{med([r.second.live for r in nix]) / med([r.first.live for r in nix]):.2f}, "
          f"Dockerfile {med([r.second.live for r in docker]) / med([r.first.live for r in docker]):.2f}; "
          f"nix reuses {med(reused) / med(total):.0%} of its layers on a one-line change")
    print(f"(the Dockerfile's base image was built beforehand, as if pulled; each flake's first "
          f"push built all its store paths.\n `git push` returns once the new release is live; "
          f"the old container drains in the background.\n Removed {deleted} of the "
          f"{len(made_paths)} nix store paths this run made.)")


if __name__ == "__main__":
    main()
