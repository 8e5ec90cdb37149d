"""Storage an app can write: before a release's containers start, the root of
each named volume it mounts is given to the user its image runs as.

A named volume is made by Docker owned by root, and Docker copies the owner
of the image's directory at the mount path onto an empty volume each time a
container mounts it; an app whose image says `USER app` (the stacks' uid
10001) then cannot write there. So a deploy runs one short task first: the
release's image, as root, with a static busybox (the health-check probe) as
its entrypoint, the volumes mounted where the app mounts them (a new volume
is seeded from the image there, as Docker always did). It resolves the
image's USER the way Docker does (a name through the image's /etc/passwd and
/etc/group; a bare uid takes its passwd entry's group, else 0), and chowns
each volume's root, not recursively, only when its owner differs; the app's
containers then mount the volumes with `nocopy`, so the owner stays.

Host directories (admins' bind mounts) are never chowned: they are the
host's; a deploy warns when one belongs to another user than the app's.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from gitd.core.errors import DeployError
from hooks import checks

USER_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
TASK_TIMEOUT = 120.0  # seconds

# busybox sh; $@: the mount paths; GITD_USER/GITD_GROUP: the image's USER,
# split and checked by `image_user`; GITD_CHOWN=0 only tells the owner.
OWNER_SCRIPT = r"""
set -eu
b=/.gitd/busybox
lookup() { WANT="$3" $b awk -F: -v key="$2" -v out="$4" '$key == ENVIRON["WANT"] { print $out; exit }' "$1" 2>/dev/null || true; }
case "$GITD_USER" in
  *[!0-9]*) uid=$(lookup /etc/passwd 1 "$GITD_USER" 3); gid=$(lookup /etc/passwd 1 "$GITD_USER" 4)
            [ -n "$uid" ] || { echo "error: user $GITD_USER is not in the image's /etc/passwd"; exit 3; } ;;
  *) uid=$GITD_USER; gid=$(lookup /etc/passwd 3 "$GITD_USER" 4); gid=${gid:-0} ;;
esac
case "$GITD_GROUP" in
  "") ;;
  *[!0-9]*) gid=$(lookup /etc/group 1 "$GITD_GROUP" 3)
            [ -n "$gid" ] || { echo "error: group $GITD_GROUP is not in the image's /etc/group"; exit 3; } ;;
  *) gid=$GITD_GROUP ;;
esac
case "$uid:$gid" in
  *[!0-9:]*|:*|*:|*:*:*) echo "error: the image's /etc/passwd gives $GITD_USER an odd uid:gid"; exit 3 ;;
esac
echo "owner $uid:$gid"
[ "${GITD_CHOWN:-1}" = 1 ] || exit 0
for dir in "$@"; do
  now=$($b stat -c %u:%g "$dir/.")
  if [ "$now" != "$uid:$gid" ]; then
    $b chown "$uid:$gid" "$dir/."
    echo "chowned $now $($b ls -A "$dir/." | $b wc -l) $dir"
  fi
done
"""


@dataclass(frozen=True)
class RunAs:
    """An image's USER: `user` a name or a uid, `group` a name, a gid or ""
    (the user's own)."""
    user: str
    group: str = ""

    def __str__(self) -> str:
        return f"{self.user}:{self.group}" if self.group else self.user


def image_user(config_user: str | None) -> RunAs:
    """The image config's User, as Docker reads it ("" is root)."""
    text = (config_user or "").strip()
    if not text:
        return RunAs("0")
    user, colon, group = text.partition(":")
    if not USER_PART.fullmatch(user) or (colon and not USER_PART.fullmatch(group)):
        raise DeployError(f"the image's USER {text[:80]!r} is not a user[:group] gitd can "
                          "resolve (names or numbers)")
    return RunAs(_number(user), _number(group))


def _number(part: str) -> str:
    """A uid or gid as chown and stat spell it (Docker reads 010 as 10)."""
    return str(int(part)) if part.isdigit() else part


def volume_mounts(mounts: list[dict]) -> list[dict]:
    return [m for m in mounts if m.get("type") == "volume"]


def owner_task_spec(base: dict, run_as: RunAs, mounts: list[dict], probe: str,
                    chown: bool = True) -> dict:
    """The task (a container spec for scheduler.run_task) that resolves
    `run_as` in the image of `base` (the release task's spec: its image,
    name and labels) and, with `chown`, gives it the roots of `mounts`."""
    targets = [m["target"] for m in mounts] if chown else []
    labels = {**base["labels"], "traefik.enable": "false"}
    return {
        "image": base["image"],
        "name": base["name"],
        "entrypoint": [checks.PROBE_PATH, "sh", "-c", OWNER_SCRIPT, "gitd-volumes"],
        "command": targets,
        "user": "0:0",
        # it runs as root beside the app's volumes: the image's own HEALTHCHECK
        # (its code) must not run in it
        "healthcheck": {"test": ["NONE"]},
        "environment": {"GITD_USER": run_as.user, "GITD_GROUP": run_as.group,
                        "GITD_CHOWN": "1" if chown else "0"},
        "labels": labels,
        "network_mode": "none",
        "mounts": [checks.probe_mount(probe)] + [
            {"type": "volume", "source": m["source"], "target": m["target"]}
            for m in (mounts if chown else [])],
    }


@dataclass
class TaskReport:
    owner: str = ""  # uid:gid
    error: str = ""
    changed: list = None  # (path, old owner, entries already there)

    @classmethod
    def parse(cls, lines: list[str]) -> "TaskReport":
        report = cls(changed=[])
        for line in lines:
            word, _, rest = line.strip().partition(" ")
            if word == "owner" and not report.owner:
                report.owner = rest
            elif word == "error:":
                report.error = rest
            elif word == "chowned":
                old, count, path = (rest.split(" ", 2) + ["", ""])[:3]
                report.changed.append((path, old, int(count) if count.isdigit() else 0))
        return report


def run_owner_task(scheduler, spec: dict) -> TaskReport:
    lines: list[str] = []
    status, timed_out = scheduler.run_task(spec, lines.append, TASK_TIMEOUT)
    report = TaskReport.parse(lines)
    if timed_out:
        raise DeployError(f"preparing the app's volumes took longer than {TASK_TIMEOUT:g}s")
    if status != 0 or not report.owner:
        why = report.error or " / ".join(line.strip() for line in lines[-3:]) or f"status {status}"
        raise DeployError(f"cannot give the app's volumes to the image's user: {why}")
    return report


def is_root(owner: str) -> bool:
    return owner.split(":", 1)[0] == "0"


def host_dir_warnings(mounts: list[dict], owner: str) -> list[str]:
    """Host directories the app's user may not own: said, never changed."""
    if is_root(owner):
        return []
    uid = int(owner.split(":", 1)[0])
    warnings = []
    for mount in mounts:
        if mount.get("type") != "bind":
            continue
        try:
            found = os.stat(mount["source"])
        except OSError:
            continue
        if found.st_uid != uid:
            warnings.append(f"host directory {mount['source']} (at {mount['target']}) belongs to "
                            f"uid {found.st_uid}, and the app runs as uid {uid}: it may not write "
                            "there (gitd leaves host directories' owners alone)")
    return warnings
