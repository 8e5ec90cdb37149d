"""Push-to-live time beside `docker build` + `docker run` by hand, and a
large push to gitd beside `git push` to a local bare repo (native
receive-pack), all measured in the same run.

    python bench/push.py [--objects 30000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import BASE_IMAGE, bench_gitd, wait_answer

from tests.e2e.harness import GIT_ENV, commit, git, make_repo, unique_app


def app_files(version: str) -> dict:
    return {"Dockerfile": (
        f"FROM {BASE_IMAGE}\nRUN mkdir -p /www\nCOPY index.html /www/index.html\n"
        'CMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]\n'),
        "index.html": f"{version}\n"}


def push_to_live(gitd, tmp: Path, rounds: int) -> tuple[list[float], list[float]]:
    """Seconds from `git push` until the new version answers through Traefik,
    and until `git push` returns (once the new release is live; the old
    container drains in the background)."""
    app = unique_app("pbench")
    assert gitd.ssh("apps:create", app).returncode == 0
    repo = make_repo(tmp / app, app_files("v0"))
    assert gitd.push(repo, app).returncode == 0  # warms the base layer cache
    live, returned = [], []
    for n in range(1, rounds + 1):
        commit(repo, app_files(f"v{n}"), f"v{n}")
        started = time.monotonic()
        push = subprocess.Popen(["git", "push", "-q", gitd.remote(app), "main"], cwd=repo,
                                env=gitd.git_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_answer(gitd.http_port, gitd.host(app), f"v{n}")
        live.append(time.monotonic() - started)
        _, err = push.communicate(timeout=120)
        returned.append(time.monotonic() - started)
        assert push.returncode == 0, err
    gitd.ssh("apps:destroy", app, "--force")
    return live, returned


def by_hand(client, tmp: Path, rounds: int) -> list[float]:
    """docker build + docker run -p 127.0.0.1::5000, until it answers."""
    times = []
    ctx = make_repo(tmp / "byhand", app_files("h0"))
    for n in range(1, rounds + 1):
        commit(ctx, app_files(f"h{n}"), f"h{n}")
        tag = f"gitd-bench/byhand:{n}"
        started = time.monotonic()
        subprocess.run(["docker", "build", "-q", "-t", tag, str(ctx)], check=True, capture_output=True)
        cid = subprocess.run(["docker", "run", "-d", "--init", "-e", "PORT=5000", "--label", "gitd.bench=byhand",
                              "-p", "127.0.0.1::5000", tag], check=True, capture_output=True,
                             text=True).stdout.strip()
        port = int(subprocess.run(["docker", "port", cid, "5000/tcp"], check=True, capture_output=True,
                                  text=True).stdout.split(":")[-1])
        wait_answer(port, "localhost", f"h{n}")
        times.append(time.monotonic() - started)
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
    return times


def big_repo(path: Path, objects: int) -> int:
    """A repository of about `objects` objects, made with git fast-import."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    files_per_commit = 1000
    commits = max(1, objects // (files_per_commit + 12))
    lines = []
    for c in range(commits):
        lines.append("commit refs/heads/main")
        lines.append(f"committer t <t@example.com> {1700000000 + c} +0000")
        message = f"commit {c}"
        lines.append(f"data {len(message)}\n{message}")
        for f in range(files_per_commit):
            content = f"file {f} of commit {c}\n" * 4
            lines.append(f"M 100644 inline d{f % 10}/c{c}/f{f}.txt")
            lines.append(f"data {len(content)}\n{content}")
        lines.append("")
    data = "\n".join(lines).encode()
    subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input=data, check=True,
                   env={**GIT_ENV, "PATH": "/usr/bin:/bin"})
    count = subprocess.run(["git", "count-objects", "-v"], cwd=path, capture_output=True, text=True).stdout
    return sum(int(line.split()[1]) for line in count.splitlines() if line.startswith(("count", "in-pack")))


def timed_push(repo: Path, remote: str, env: dict) -> float:
    started = time.monotonic()
    result = subprocess.run(["git", "push", "-q", remote, "main:refs/heads/bulk"], cwd=repo, env=env,
                            capture_output=True, text=True)
    took = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return took


def large_push(gitd, tmp: Path, objects: int, rounds: int) -> tuple[int, list[float], list[float]]:
    repo = tmp / "big"
    count = big_repo(repo, objects)
    gitd_times, native_times = [], []
    for n in range(rounds):
        app = unique_app("big")
        assert gitd.ssh("apps:create", app).returncode == 0
        gitd_times.append(timed_push(repo, gitd.remote(app), gitd.git_env()))
        gitd.ssh("apps:destroy", app, "--force")
        bare = tmp / f"bare{n}.git"
        subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
        native_times.append(timed_push(repo, str(bare), gitd.git_env()))
    return count, gitd_times, native_times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=30000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, bench_gitd(Path(tmp)) as (gitd, client):
        tmp = Path(tmp)
        gitd_live, gitd_return = push_to_live(gitd, tmp, args.rounds)
        hand = by_hand(client, tmp, args.rounds)
        count, gitd_big, native_big = large_push(gitd, tmp, args.objects, args.rounds)
    g, h = statistics.median(gitd_live), statistics.median(hand)
    print(f"\npush to live, small Dockerfile app, cached base (median of {args.rounds}):")
    print(f"  git push to gitd until the new version answers via Traefik: {g:6.2f} s  {fmt(gitd_live)}")
    print(f"  docker build + docker run by hand until it answers:         {h:6.2f} s  {fmt(hand)}")
    print(f"  (git push returns once the new release is live: {statistics.median(gitd_return):.2f} s "
          f"{fmt(gitd_return)})")
    print(f"  ratio gitd / by hand: {g / h:.2f}")
    gb, nb = statistics.median(gitd_big), statistics.median(native_big)
    print(f"\npush of {count} objects (median of {args.rounds}):")
    print(f"  to gitd (dulwich receive-pack over asyncssh): {gb:6.2f} s  {fmt(gitd_big)}")
    print(f"  to a local bare repo (native receive-pack):   {nb:6.2f} s  {fmt(native_big)}")
    print(f"  ratio gitd / native: {gb / nb:.2f}")


def fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


if __name__ == "__main__":
    main()
