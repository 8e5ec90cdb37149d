"""Code fetched from a repository elsewhere (an app that follows a forge):
git's own client, into the app's repository under gitd, under a private ref.

Only https and ssh reach other hosts; a local path (file) only when an admin
set it. No submodules, no tags, no prompt for a password, a time bound, and
the app's repository size bound checked afterwards."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from gitd.core.errors import GitdError, UsageError

SYNC_REF = "refs/gitd/sync"
# user@host:path (scp-like ssh), as git reads it
SCP_LIKE = re.compile(r"^(?P<user>[A-Za-z0-9._-]{1,64})@(?P<host>[A-Za-z0-9.-]{1,253}):(?P<path>[^\s]{1,1024})$")
# A ref: segments of letters, digits, _ and -, joined by single . or /; it
# starts with a letter, digit or _ (never an option, `..`, `//` or a refspec)
REF_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]*(?:[./][A-Za-z0-9_-]+)*$"
REF = re.compile(REF_PATTERN)
REF_MAX = 200
# What url_kind accepts, as a JSON Schema pattern (no lookaheads): a path,
# file:///path, https://HOST[:PORT][/...], ssh://[USER@]HOST[:PORT][/...] or
# USER@HOST:PATH. Nothing else is ever fetched.
URL_PATTERN = (r"^(?:/[^\s\x00]*|file:///[^\s\x00]*"
               r"|https://[A-Za-z0-9._~-]+(?::[1-9][0-9]{0,3})?(?:/[^\s\x00]*)?"
               r"|ssh://(?:[A-Za-z0-9][A-Za-z0-9._-]{0,63}@)?[A-Za-z0-9._~-]+"
               r"(?::[1-9][0-9]{0,3})?(?:/[^\s\x00]*)?"
               r"|[A-Za-z0-9][A-Za-z0-9._-]{0,63}@[A-Za-z0-9.-]{1,253}:[^\s\x00]{1,1024})$")
URL_MAX = 2048
SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")


def url_kind(url: str) -> str:
    """"https", "ssh" or "file" for a repository URL gitd may fetch from;
    UsageError for anything else (http, git://, ext::, options)."""
    if not url or len(url) > URL_MAX or url.startswith("-") or any(c in url for c in "\x00\n\r \t"):
        raise UsageError("a repository URL is https://..., ssh://..., user@host:path or an "
                         "absolute path")
    if url.startswith("/"):
        return "file"  # admins only: they set the URLs apps follow
    if SCP_LIKE.match(url):
        return "ssh"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError:
        raise UsageError(f"not a URL gitd can fetch from: {url[:100]!r}") from None
    if parts.scheme in ("https", "ssh") and parts.hostname:
        # an https user is a token as often as a name (GitHub's, GitLab's
        # oauth2:...), and the URL is in git's argv: any local user's `ps`
        if parts.password or (parts.scheme == "https" and "@" in parts.netloc):
            raise UsageError("put no credential in a repository URL: use an ssh URL with the "
                             "app's deploy key (git:deploy-key)")
        return parts.scheme
    if parts.scheme == "file" and not parts.netloc and parts.path.startswith("/"):
        return "file"
    raise UsageError(f"gitd fetches over https or ssh (or a local path, for admins), not "
                     f"{(parts.scheme or url)[:40]!r}")


def check_ref(ref: str) -> str:
    """A branch, tag or commit name as a forge gives it (REF_PATTERN)."""
    if not isinstance(ref, str) or len(ref) > REF_MAX or not REF.fullmatch(ref):
        raise UsageError(f"invalid ref {str(ref)[:100]!r}")
    return ref


def fetch(repo_dir: Path, url: str, ref: str, key_file: Path | None, timeout: float,
          max_file_bytes: int | None = None) -> str:
    """Fetch `ref` of `url` into the repository at `repo_dir` as SYNC_REF and
    return its commit. No file git writes may grow past `max_file_bytes`:
    the repository's size is checked after the fetch, and a huge upstream
    would fill the disk before that."""
    kind = url_kind(url)
    check_ref(ref)
    argv = [*file_size_limit(max_file_bytes), "git", "-c", "protocol.allow=never",
            "-c", f"protocol.{kind}.allow=always", "-c", "core.hooksPath=/dev/null",
            "-c", "credential.helper=",
            # one pack, never loose objects: each file is bounded, so is the whole
            "-c", "fetch.unpackLimit=1",
            "--git-dir", str(repo_dir), "fetch", "--quiet", "--no-tags",
            "--no-recurse-submodules", "--no-write-fetch-head", "--", url,
            f"+{ref}:{SYNC_REF}"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(repo_dir),
           "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_SSH_COMMAND": ssh_command(key_file, repo_dir),
           "LANG": "C"}
    try:
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise GitdError("git is not installed on this server (apt-get install git): gitd needs "
                        "it to fetch from a repository") from None
    except subprocess.TimeoutExpired:
        raise GitdError(f"fetching {ref} from {display(url)} took longer than {timeout:.0f}s") \
            from None
    # a child (unpack-objects, index-pack) killed by the limit: git names only it
    if max_file_bytes is not None and (result.returncode == -signal.SIGXFSZ or any(
            sign in result.stderr for sign in ("File too large", "unpack-objects failed",
                                               "index-pack failed", "invalid index-pack"))):
        raise GitdError(f"fetching {ref} from {display(url)} stopped: it is larger than "
                        f"max_repo_bytes ({max_file_bytes} bytes), or its pack is broken")
    if result.returncode != 0:
        raise GitdError(f"could not fetch {ref} from {display(url)}: {last_line(result.stderr)}")
    commit = subprocess.run(["git", "--git-dir", str(repo_dir), "rev-parse", "--verify", "--quiet",
                             f"{SYNC_REF}^{{commit}}"], env=env, capture_output=True, text=True,
                            timeout=30)
    if commit.returncode != 0:
        raise GitdError(f"{ref} of {display(url)} is not a commit")
    return commit.stdout.strip()


def file_size_limit(max_bytes: int | None) -> list[str]:
    """util-linux's prlimit before an argv (no preexec_fn: gitd has threads)."""
    return [] if max_bytes is None else ["prlimit", f"--fsize={max_bytes}", "--"]


def ssh_command(key_file: Path | None, home: Path) -> str:
    """ssh with the app's deploy key alone, no agent, no prompt. Host keys
    are accepted on first use and remembered beside the repository."""
    known = home / "gitd_known_hosts"
    parts = ["ssh", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
             "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known}",
             "-o", "ConnectTimeout=20", "-F", "/dev/null"]
    if key_file is not None:
        parts += ["-i", str(key_file)]
    return " ".join(parts)


def display(url: str) -> str:
    """The URL without anything that could be a credential (an https user
    may be a token; an ssh user is a login name)."""
    parts = urlsplit(url)
    if parts.scheme and parts.hostname:
        user = f"{parts.username}@" if parts.scheme == "ssh" and parts.username else ""
        host = user + parts.hostname + (f":{parts.port}" if parts.port else "")
        return f"{parts.scheme}://{host}{parts.path}"[:200]
    return url[:200]


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "git failed")[:300]
