"""A repository shaped like a real project's history, made deterministically
with `git fast-import` and cached between runs: a few hundred source files in
nested directories, thousands of small commits each editing a few of them
(so packs hold long delta chains), with files added, renamed and deleted.

    python bench/gitrepo.py [--commits 5200] [PATH]   # prints its shape
"""

from __future__ import annotations

import argparse
import random
import subprocess
from pathlib import Path

SHAPE_VERSION = 1
WORDS = ("self value return data config request handler error result index item name "
         "path buffer client server stream parse render update delete create commit "
         "build deploy release route health check timeout retry cache token user").split()


def _line(rng: random.Random) -> str:
    indent = "    " * rng.randint(0, 3)
    return indent + " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 10)))


def _path(rng: random.Random, n: int) -> str:
    return f"src/pkg{rng.randint(0, 11)}/mod{rng.randint(0, 5)}/file{n}.py"


def fast_import_stream(commits: int, seed: int = 14) -> bytes:
    rng = random.Random(seed)
    files: dict[str, list[str]] = {}
    counter = 0
    out: list[bytes] = []

    def blob(path: str) -> None:
        data = ("\n".join(files[path]) + "\n").encode()
        out.append(f"M 100644 inline {path}\ndata {len(data)}\n".encode() + data + b"\n")

    for c in range(commits):
        changes: list[str] = []
        ops: list[bytes] = []
        if c == 0:
            for _ in range(400):
                counter += 1
                path = _path(rng, counter)
                files[path] = [_line(rng) for _ in range(rng.randint(20, 250))]
                changes.append(path)
        else:
            for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
                path = rng.choice(sorted(files)) if rng.random() < 0.3 else \
                    sorted(files)[int(rng.triangular(0, len(files) - 1, 0))]
                lines = files[path]
                for _ in range(rng.randint(1, 6)):
                    at = rng.randint(0, len(lines))
                    roll = rng.random()
                    if roll < 0.5 or len(lines) < 5:
                        lines.insert(at, _line(rng))
                    elif roll < 0.8:
                        lines[min(at, len(lines) - 1)] = _line(rng)
                    else:
                        del lines[min(at, len(lines) - 1)]
                changes.append(path)
            if rng.random() < 0.05:
                counter += 1
                path = _path(rng, counter)
                files[path] = [_line(rng) for _ in range(rng.randint(10, 120))]
                changes.append(path)
            if rng.random() < 0.02 and len(files) > 50:
                old = rng.choice(sorted(files))
                counter += 1
                new = _path(rng, counter)
                files[new] = files.pop(old)
                ops.append(f"R {old} {new}\n".encode())
                changes = [p for p in changes if p != old]
            if rng.random() < 0.01 and len(files) > 50:
                gone = rng.choice(sorted(files))
                del files[gone]
                ops.append(f"D {gone}\n".encode())
                changes = [p for p in changes if p != gone]
        message = f"change {c}: {' '.join(rng.choice(WORDS) for _ in range(5))}\n".encode()
        out.append(b"commit refs/heads/main\n")
        out.append(f"author Dev {c % 7} <dev{c % 7}@example.com> {1600000000 + c * 3600} +0000\n".encode())
        out.append(f"committer Dev {c % 7} <dev{c % 7}@example.com> {1600000000 + c * 3600} +0000\n".encode())
        out.append(f"data {len(message)}\n".encode() + message)
        out.extend(ops)
        for path in dict.fromkeys(changes):
            if path in files:
                blob(path)
        out.append(b"\n")
    return b"".join(out)


GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin",
           "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@b"}


def ensure_repo(commits: int = 5200, root: Path | None = None) -> Path:
    """The cached repository (a normal clone with a work tree), made once."""
    root = root or Path("/tmp/gitd-bench")
    path = root / f"realshape-v{SHAPE_VERSION}-{commits}"
    if (path / ".git" / "gitd-bench-ready").exists():
        return path
    subprocess.run(["rm", "-rf", str(path)], check=True)
    path.mkdir(parents=True)
    run = lambda *a, **kw: subprocess.run(["git", *a], cwd=path, env=GIT_ENV, check=True, **kw)
    run("init", "-q", "-b", "main")
    run("fast-import", "--quiet", input=fast_import_stream(commits))
    run("repack", "-adq", "--window=50", "--depth=50")  # as `git gc` leaves a real clone
    run("checkout", "-q", "main")
    (path / ".git" / "gitd-bench-ready").write_text("ok\n")
    return path


def shape(path: Path) -> dict:
    git = lambda *a: subprocess.run(["git", *a], cwd=path, env=GIT_ENV, check=True,
                                    capture_output=True, text=True).stdout
    counts = dict(line.split(": ") for line in git("count-objects", "-v").splitlines())
    renames = git("log", "--diff-filter=R", "-M", "--oneline", "main").count("\n")
    return {"objects": int(counts["count"]) + int(counts["in-pack"]),
            "commits": int(git("rev-list", "--count", "main")),
            "files": len(git("ls-files").splitlines()),
            "renames": renames, "pack_kib": int(counts["size-pack"])}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, default=5200)
    parser.add_argument("root", nargs="?", type=Path)
    args = parser.parse_args()
    repo = ensure_repo(args.commits, args.root)
    print(repo, shape(repo))
