"""Where users wait, each figure beside a baseline measured in the same run:

- push return: `git push` of a one-line change to a small cached Dockerfile
  app until it returns and the new version answers, beside `docker build` +
  `docker run` by hand until it answers;
- receive, clone (the first of a state of the refs, and one more), and a fetch
  of 10 new commits of a repository with a real
  project's shape (bench/gitrepo.py: ~50,000 objects, 5,200 commits, renames,
  deltas), beside native git on a local bare repository (`git push` to it,
  `git clone --no-local`, `git fetch`) and, when OpenSSH's sshd is installed
  (openssh-server), beside git's own upload-pack behind a throwaway sshd on
  127.0.0.1 (the same ssh client and handshake as gitd's);
- an admin command round trip (`ssh paas apps:list`, handshake included)
  and gitd's idle RSS, beside their targets.

With --under-load, only push return under load: pushes to one app with
bench/swap.py's HTTP traffic (3 keep-alive + 3 new-connection clients,
~15 req/s each, through Traefik) running against another app, beside the
same pushes without it, alternating so both see the same machine.

    python bench/speed.py [--rounds 3] [--commits 5200] [--under-load]

The machine may be shared: run it more than once and compare medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import SETTLE, HttpLoad, bench_gitd  # noqa: I001 - first: puts the repo on sys.path
import sshd
from gitrepo import GIT_ENV, ensure_repo, shape
from push import app_files, by_hand, wait_answer

from tests.e2e.harness import commit, make_repo, unique_app

COMMAND_TARGET_MS = 150.0
RSS_TARGET_MB = 80.0


def timed(argv: list[str], cwd=None, env=None) -> float:
    started = time.monotonic()
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stderr}")
    return took


def push_return(gitd, tmp: Path, rounds: int) -> list[float]:
    """Seconds from `git push` until it returned and the new version answers."""
    app = unique_app("ret")
    assert gitd.ssh("apps:create", app).returncode == 0
    repo = make_repo(tmp / app, app_files("v0"))
    first = gitd.push(repo, app)  # the base layer is cached from here on
    assert first.returncode == 0, first.stderr
    times = []
    for n in range(1, rounds + 1):
        time.sleep(SETTLE)
        commit(repo, app_files(f"v{n}"), f"v{n}")
        started = time.monotonic()
        pushed = gitd.push(repo, app)
        assert pushed.returncode == 0, pushed.stderr
        wait_answer(gitd.http_port, gitd.host(app), f"v{n}")
        times.append(time.monotonic() - started)
    gitd.ssh("apps:destroy", app, "--force")
    return times


def push_return_under_load(gitd, tmp: Path, rounds: int) -> tuple[list[float], list[float], dict]:
    """(quiet, loaded, load summary): push-return of one app, alternately
    without and with HTTP load on another app."""
    busy = unique_app("busy")
    assert gitd.ssh("apps:create", busy).returncode == 0
    assert gitd.push(make_repo(tmp / busy, app_files("busy")), busy).returncode == 0
    wait_answer(gitd.http_port, gitd.host(busy), "busy")
    app = unique_app("ret")
    assert gitd.ssh("apps:create", app).returncode == 0
    repo = make_repo(tmp / app, app_files("v0"))
    assert gitd.push(repo, app).returncode == 0

    def one(n: int) -> float:
        commit(repo, app_files(f"v{n}"), f"v{n}")
        started = time.monotonic()
        pushed = gitd.push(repo, app)
        if pushed.returncode != 0:
            raise SystemExit(pushed.stderr + "\n".join(errors_logged(gitd)))
        wait_answer(gitd.http_port, gitd.host(app), f"v{n}")
        return time.monotonic() - started

    quiet, loaded = [], []
    with HttpLoad(gitd.http_port, gitd.host(busy)) as load:
        load.pause()
        for n in range(rounds):
            quiet.append(one(2 * n + 1))
            load.resume()
            time.sleep(1)  # the load is steady before the push starts
            loaded.append(one(2 * n + 2))
            load.pause()
            time.sleep(1)  # and gone before the next quiet one
    for name in (app, busy):
        gitd.ssh("apps:destroy", name, "--force")
    return quiet, loaded, load.summary()


def errors_logged(gitd) -> list[str]:
    """gitd's logged errors, tracebacks included, for a push that failed."""
    lines = []
    for log in Path(gitd.root).rglob("serve-*.log"):
        lines += [line for line in log.read_text(errors="replace").splitlines() if '"level": "error"' in line]
    return lines


def git_figures(gitd, tmp: Path, source: Path, rounds: int,
                native_ssh: tuple[str, dict] | None = None) -> dict[str, tuple[list, list]]:
    """gitd against native git in the same round: git's own local transport,
    and (with `native_ssh`, a sshd serving git) git's own upload-pack over
    OpenSSH, which pays the same ssh handshake and transport as gitd."""
    env = gitd.git_env()
    # a branch other than main: stored, not deployed
    figures = {"receive": ([], []), "clone": ([], []), "clone again, refs unchanged": ([], []),
               "push 10 commits": ([], []), "clone after that push": ([], []),
               "fetch 10 commits": ([], []),
               "ls-remote (connection + refs)": ([], [])}
    if native_ssh:
        figures.update({"clone, vs native over ssh": ([], []),
                        "fetch 10 commits, vs native over ssh": ([], [])})
        ssh_url, ssh_env = native_ssh[0], dict(env, **native_ssh[1])
    for n in range(rounds):
        app = unique_app("git")
        assert gitd.ssh("apps:create", app).returncode == 0
        bare = tmp / f"native{n}.git"
        subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True, env=GIT_ENV)
        push = ["git", "push", "-q"]
        figures["receive"][0].append(timed([*push, gitd.remote(app), "main:refs/heads/bulk"],
                                           cwd=source, env=env))
        figures["receive"][1].append(timed([*push, str(bare), "main:refs/heads/bulk"], cwd=source, env=env))
        ours, theirs = tmp / f"clone-gitd{n}", tmp / f"clone-native{n}"
        figures["clone"][0].append(timed(["git", "clone", "-q", "--bare", gitd.remote(app), str(ours)], env=env))
        figures["clone"][1].append(timed(["git", "clone", "-q", "--bare", "--no-local", str(bare), str(theirs)],
                                         env=env))
        # the first clone of a state walks what the refs reach (gitd.reachable); the next ones need not
        figures["clone again, refs unchanged"][0].append(timed(
            ["git", "clone", "-q", "--bare", gitd.remote(app), str(tmp / f"again-gitd{n}")], env=env))
        figures["clone again, refs unchanged"][1].append(timed(
            ["git", "clone", "-q", "--bare", "--no-local", str(bare), str(tmp / f"again-native{n}")], env=env))
        over_ssh = tmp / f"clone-native-ssh{n}"
        if native_ssh:
            figures["clone, vs native over ssh"][0].append(figures["clone"][0][-1])
            figures["clone, vs native over ssh"][1].append(timed(
                ["git", "clone", "-q", "--bare", f"{ssh_url}{bare}", str(over_ssh)], env=ssh_env))
        work = tmp / f"work{n}"
        subprocess.run(["git", "clone", "-q", str(source), str(work)], check=True, env=GIT_ENV)
        for c in range(10):
            with open(work / "src" / f"bench-{n}.txt", "a") as f:
                f.write(f"change {c}\n")
            subprocess.run(["git", "-C", str(work), "add", "-A"], check=True, env=GIT_ENV)
            subprocess.run(["git", "-C", str(work), "commit", "-qm", f"bench {c}"], check=True, env=GIT_ENV)
        figures["push 10 commits"][0].append(timed([*push, gitd.remote(app), "HEAD:refs/heads/bulk"],
                                                   cwd=work, env=env))
        figures["push 10 commits"][1].append(timed([*push, str(bare), "HEAD:refs/heads/bulk"], cwd=work, env=env))
        # a fast-forward keeps "every object reached" known: no walk again
        figures["clone after that push"][0].append(timed(
            ["git", "clone", "-q", "--bare", gitd.remote(app), str(tmp / f"after-gitd{n}")], env=env))
        figures["clone after that push"][1].append(timed(
            ["git", "clone", "-q", "--bare", "--no-local", str(bare), str(tmp / f"after-native{n}")], env=env))
        figures["ls-remote (connection + refs)"][0].append(timed(["git", "ls-remote", gitd.remote(app)], env=env))
        figures["ls-remote (connection + refs)"][1].append(timed(["git", "ls-remote", str(bare)], env=env))
        figures["fetch 10 commits"][0].append(timed(["git", "-C", str(ours), "fetch", "-q", gitd.remote(app),
                                                     "bulk:bulk"], env=env))
        figures["fetch 10 commits"][1].append(timed(["git", "-C", str(theirs), "fetch", "-q", "--no-auto-gc",
                                                     str(bare), "bulk:bulk"], env=env))
        checked = [ours, theirs]
        if native_ssh:
            figures["fetch 10 commits, vs native over ssh"][0].append(figures["fetch 10 commits"][0][-1])
            figures["fetch 10 commits, vs native over ssh"][1].append(timed(
                ["git", "-C", str(over_ssh), "fetch", "-q", "--no-auto-gc", f"{ssh_url}{bare}",
                 "bulk:bulk"], env=ssh_env))
            checked.append(over_ssh)
        for repo in checked:
            check = subprocess.run(["git", "-C", str(repo), "fsck", "--no-dangling"], capture_output=True,
                                   text=True)
            if check.returncode != 0:
                raise SystemExit(f"fsck of {repo} failed:\n{check.stderr}")
        gitd.ssh("apps:destroy", app, "--force")
        subprocess.run(["rm", "-rf", str(bare), str(ours), str(theirs), str(work), str(over_ssh)])
    return figures


def command_round_trips(gitd, count: int) -> list[float]:
    gitd.ssh("apps:list")  # warm: first connection, caches
    return [timed(["ssh", "-F", str(gitd.ssh_config(gitd.admin_key)), "-T", "paas", "apps:list"]) * 1000
            for _ in range(count)]


def idle_rss_mb(gitd) -> float:
    time.sleep(2)
    for line in Path(f"/proc/{gitd.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--commits", type=int, default=5200)
    parser.add_argument("--under-load", action="store_true",
                        help="only push return with and without HTTP load on another app")
    args = parser.parse_args()
    rounds = max(1, min(args.rounds, 20))
    if args.under_load:
        return under_load_main(rounds)
    source = ensure_repo(args.commits)
    repo_shape = shape(source)
    with tempfile.TemporaryDirectory() as tmp, bench_gitd(Path(tmp)) as (gitd, client):
        tmp = Path(tmp)
        rss_fresh = idle_rss_mb(gitd)
        commands = command_round_trips(gitd, 15)
        returned = push_return(gitd, tmp, rounds)
        hand = by_hand(client, tmp, rounds)
        if sshd.available():
            with sshd.native_sshd(tmp / "sshd", gitd.admin_key) as native_ssh:
                git = git_figures(gitd, tmp, source, rounds, native_ssh)
        else:
            print("(no /usr/sbin/sshd: apt-get install openssh-server for the over-ssh baselines)")
            git = git_figures(gitd, tmp, source, rounds)
        rss_used = idle_rss_mb(gitd)

    rows = [("push returns, new version answers (s)", returned, hand, "docker build + run by hand")]
    rows += [(f"{name} (s)", ours, theirs,
              "native git over OpenSSH" if "over ssh" in name else "native git, local bare repo")
             for name, (ours, theirs) in git.items()]
    # the local baseline pays no ssh handshake: the fetch beside it less each side's ls-remote
    (fetch_ours, fetch_theirs), (ls_ours, ls_theirs) = git["fetch 10 commits"], git["ls-remote (connection + refs)"]
    rows.append(("fetch 10 commits less ls-remote (s)", [max(0.001, f - l) for f, l in zip(fetch_ours, ls_ours)],
                 [max(0.001, f - l) for f, l in zip(fetch_theirs, ls_theirs)], "the same, less each side's ls-remote"))
    print(f"\nrepository: {repo_shape}")
    print(f"median of {rounds} rounds (each round's values in brackets)\n")
    print(f"| {'what the user waits for':40} | {'gitd':>8} | {'baseline':>8} | {'ratio':>5} | baseline |")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 10}|{'-' * 7}|----------|")
    for name, ours, theirs, baseline in rows:
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"| {name:40} | {a:8.3f} | {b:8.3f} | {a / b:5.2f} | {baseline} |")
    c = statistics.median(commands)
    print(f"| {'`ssh paas apps:list` round trip (ms)':40} | {c:8.0f} | {COMMAND_TARGET_MS:8.0f} | "
          f"{c / COMMAND_TARGET_MS:5.2f} | target |")
    for label, rss in (("gitd idle RSS, fresh (MB)", rss_fresh), ("gitd idle RSS, after the runs (MB)", rss_used)):
        print(f"| {label:40} | {rss:8.0f} | {RSS_TARGET_MB:8.0f} | {rss / RSS_TARGET_MB:5.2f} | target |")
    print()
    for name, ours, theirs, _ in rows:
        print(f"  {name}: gitd {fmt(ours)}  baseline {fmt(theirs)}")
    print(f"  apps:list round trips (ms): {fmt(commands, 0)}")


def under_load_main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, bench_gitd(Path(tmp)) as (gitd, _client):
        quiet, loaded, load = push_return_under_load(gitd, Path(tmp), rounds)
    a, b = statistics.median(loaded), statistics.median(quiet)
    print(f"\npush returns, new version answers, median of {rounds} pairs (target: ratio <= 1.5)")
    print(f"  under load {a:.2f} s  quiet {b:.2f} s  ratio {a / b:.2f}")
    print(f"  under load {fmt(loaded)}  quiet {fmt(quiet)}  ratios {fmt([x / y for x, y in zip(loaded, quiet)])}")
    print(f"  load on the other app: sent {load['sent']}, failed {load['failed']}, "
          f"p50 {load['p50_ms']:.1f} ms, p99 {load['p99_ms']:.1f} ms")


def fmt(values: list[float], digits: int = 3) -> str:
    return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"


if __name__ == "__main__":
    main()
