"""Preview apps (issue #25): a branch pushed beside the deploy branch runs as
an app of its own, `APP--<branch>`. What is pure about them lives here: the
name a branch gets, the policy an app's settings and app.json make, the
config and the bounded resources a preview runs with.

Policy: `previews:enable` / `previews:disable` (the app's settings, key
"previews") win over app.json's "previews" object, which enables previews
by being there; ttl and max fall back to app.json, then to the defaults.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata

from gitd.core import resources, validate
from gitd.core.errors import UsageError

SEPARATOR = "--"  # plain app names never hold it: a preview's name cannot be another app's
MAX_NAME = 63  # a DNS label: the preview's host is <name>.<domain>
DEFAULT_TTL = 7 * 86400
MIN_TTL, MAX_TTL = 5, 365 * 86400
DEFAULT_MAX = 5
MAX_PREVIEWS = 20  # per app, whoever asks: previews must not starve production
MAX_ENV = 200  # keys in previews.env or previews.exclude
MAX_VALUE = 32 * 1024
TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
TTL = re.compile(r"^([0-9]{1,8})([smhd])$")
APP_JSON_KEYS = {"ttl", "max", "exclude", "env", "services"}
# shared: linked to the parent's services (their config vars kept, their
# networks joined); fresh: its own empty ones of the same kinds
SERVICES = ("shared", "fresh")
MAX_SCRIPT = 4096


def label_of(branch: str) -> str:
    """A branch as DNS label text: letters folded to ASCII and lowercased,
    every run of anything else one dash, no dash at either end."""
    folded = unicodedata.normalize("NFKD", branch).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", folded).strip("-")


PULL_LABEL = re.compile(r"^pr-[0-9]+$")


def pull_branch(number: int) -> str:
    """The branch a pull request's preview is recorded under: `pr-N`."""
    return f"pr-{number}"


def pull_request_label(branch: str) -> bool:
    """True for a pushed branch that would take a pull request preview's
    name (`pr-7`, `PR/7`): those names are kept for the forge's events."""
    return bool(PULL_LABEL.fullmatch(label_of(branch)))


def name_of(parent: str, branch: str) -> str:
    """`parent--label`, at most 63 characters (the label cut to fit)."""
    room = MAX_NAME - len(parent) - len(SEPARATOR)
    label = label_of(branch)[:room].rstrip("-")
    if not label:
        raise UsageError(f"branch {shown(branch)} has no letter or digit to name a preview by; "
                         "rename the branch")
    return f"{parent}{SEPARATOR}{label}"


def shown(branch: str) -> str:
    """A branch name as it goes into a message: quoted, bounded."""
    return repr(branch if len(branch) <= 80 else branch[:77] + "...")


def split_name(name: str) -> tuple[str, str] | None:
    """(parent, label) of a preview's name; None for anything else."""
    parent, sep, label = (name or "").partition(SEPARATOR)
    if not sep or len(name) > MAX_NAME or not validate.PREVIEW_LABEL.fullmatch(label):
        return None
    try:
        validate.plain_app_name(parent)
    except UsageError:
        return None
    return parent, label


def ttl_seconds(text: str) -> int:
    match = TTL.fullmatch(str(text).strip().lower())
    if not match:
        raise UsageError(f"ttl {shown(str(text))}: expected a number and a unit s, m, h or d "
                         "(7d, 12h)")
    value = int(match.group(1)) * TTL_UNITS[match.group(2)]
    if not MIN_TTL <= value <= MAX_TTL:
        raise UsageError(f"ttl {text!r}: must be between {MIN_TTL}s and 365d")
    return value


def max_count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) \
            or not re.fullmatch(r"[0-9]{1,3}", str(value).strip()):
        raise UsageError(f"max {shown(str(value))}: expected a whole number of previews")
    count = int(str(value).strip())
    if not 1 <= count <= MAX_PREVIEWS:
        raise UsageError(f"max {count}: must be between 1 and {MAX_PREVIEWS} previews per app")
    return count


def from_app_json(text: str | None) -> dict | None:
    """app.json's "previews", checked; None when it has none. Raises
    UsageError on a broken one (the push of the deploy branch fails early)."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None  # a broken app.json is refused by its other readers
    if not isinstance(data, dict) or "previews" not in data:
        return None
    section = data["previews"]
    if not isinstance(section, dict):
        raise UsageError('app.json: "previews" must be an object')
    unknown = set(section) - APP_JSON_KEYS
    if unknown:
        raise UsageError(f'app.json: unknown key(s) in "previews": {", ".join(sorted(unknown))[:200]} '
                         f"(known: {', '.join(sorted(APP_JSON_KEYS))})")
    policy = {"ttl": ttl_seconds(section["ttl"]) if "ttl" in section else None,
              "max": max_count(section["max"]) if "max" in section else None,
              "exclude": _keys(section.get("exclude", [])),
              "env": _env(section.get("env", {})),
              "services": section.get("services", "shared")}
    if policy["services"] not in SERVICES:
        raise UsageError(f'app.json: previews.services {shown(str(policy["services"]))}: '
                         'expected "shared" or "fresh"')
    postdeploy(text)
    return policy


def postdeploy(text: str | None) -> str | None:
    """app.json's scripts.postdeploy (run once after a fresh preview's
    first deploy), checked; None when there is none."""
    try:
        data = json.loads(text or "{}")
    except ValueError:
        return None
    scripts = data.get("scripts") if isinstance(data, dict) else None
    if scripts is None:
        return None
    script = scripts.get("postdeploy") if isinstance(scripts, dict) else scripts
    if script is None:
        return None
    if not isinstance(script, str) or not script.strip() or len(script) > MAX_SCRIPT \
            or "\x00" in script:
        raise UsageError(f"app.json: scripts.postdeploy must be a command line of at most "
                         f"{MAX_SCRIPT} characters")
    return script


def fresh_service_name(preview: str, service: str) -> str:
    """The name of a preview's own service in place of the parent's
    `service`: a valid service name, the same for the same pair."""
    return "pv" + hashlib.sha256(f"{preview}/{service}".encode()).hexdigest()[:12]


def _keys(value) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_ENV:
        raise UsageError(f'app.json: previews.exclude must be a list of at most {MAX_ENV} config keys')
    for key in value:
        if not isinstance(key, str):
            raise UsageError("app.json: previews.exclude holds config keys (text)")
        validate.config_key(key)
    return sorted(set(value))


def _env(value) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > MAX_ENV:
        raise UsageError(f"app.json: previews.env must be an object of at most {MAX_ENV} keys")
    for key, text in value.items():
        validate.config_key(key)
        # the keys gitd sets itself, as config:set refuses them (gitd.verbs.config)
        if key.startswith("GITD_") or key == "DYNO":
            raise UsageError(f"app.json: previews.env.{key} is set by gitd itself")
        if not isinstance(text, str) or len(text) > MAX_VALUE or "\x00" in text:
            raise UsageError(f"app.json: previews.env.{key} must be text of at most "
                             f"{MAX_VALUE} characters")
        if key == "PORT":
            validate.port(text)
    return dict(value)


def policy(app_settings: dict, app_json: str | None) -> dict | None:
    """What previews of an app do, or None when it has them off."""
    own = app_settings.get("previews") or {}
    declared = from_app_json(app_json)
    if not own.get("enabled", declared is not None):
        return None
    declared = declared or {"ttl": None, "max": None, "exclude": [], "env": {},
                            "services": "shared"}
    return {**declared,
            "ttl": own.get("ttl") or declared["ttl"] or DEFAULT_TTL,
            "max": own.get("max") or declared["max"] or DEFAULT_MAX}


def config_of(parent_config: dict[str, str], rules: dict) -> dict[str, str]:
    """The parent's config minus previews.exclude plus previews.env."""
    kept = {k: v for k, v in parent_config.items() if k not in set(rules["exclude"])}
    return {**kept, **rules["env"]}


def bounded_resources(settings, parent_settings: dict) -> dict[str, str]:
    """Each limit the lower of the parent's and the preview caps (settings
    preview_memory, preview_cpus, preview_pids; "" or "0": the parent's)."""
    parent = resources.effective(settings, parent_settings)
    caps = {"memory": settings.preview_memory, "cpus": settings.preview_cpus,
            "pids": settings.preview_pids}
    bounded = {}
    for key in resources.KEYS:
        cap = str(caps[key]).strip()
        candidates = [v for v in (parent.get(key), cap if cap not in ("", "0") else None) if v]
        if candidates:
            bounded[key] = min(candidates, key=resources.PARSERS[key])
    return bounded
