"""Push events from a forge, verified with the app's own secret.

GitHub signs the raw body with HMAC-SHA256 (`X-Hub-Signature-256:
sha256=HEX`), Gitea and Forgejo too (`X-Gitea-Signature: HEX`, and they also
send GitHub's headers), GitLab sends the secret itself (`X-Gitlab-Token`).
Each is compared in constant time, and the body is read as JSON only after
it is verified."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Mapping

from gitd.core import previews
from gitd.core.errors import GitdError

COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
DELIVERY = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
ZERO = re.compile(r"^0+$")


class Unverified(GitdError):
    """A webhook without a valid signature for this app: 401, nothing done."""


@dataclass(frozen=True)
class Delivery:
    forge: str  # github, gitea, gitlab
    event: str  # push, ping, or the forge's other event names
    delivery: str | None  # the forge's delivery id (redeliveries repeat it)
    branch: str | None = None  # of a push; of a pull request: its preview's, pr-N
    commit: str | None = None  # what the branch now points at; None: deleted
    # a pull (merge) request's: the forge's ref of its head, and what happened
    # to it: "update" (opened, pushed to, reopened), "close" (closed, merged)
    ref: str | None = None
    action: str | None = None


def read(headers: Mapping[str, str], body: bytes, secret: str | None) -> Delivery:
    """Verify and read one delivery. `secret` None (no webhook for the app)
    is refused like a bad signature, after the same work."""
    h = {k.lower(): v for k, v in headers.items()}
    forge = forge_of(h)
    if not verified(forge, h, body, secret or ""):
        raise Unverified("missing or bad webhook signature")
    event = event_of(forge, h)
    delivery = h.get({"github": "x-github-delivery", "gitea": "x-gitea-delivery",
                      "gitlab": "x-gitlab-event-uuid"}[forge]) or h.get("idempotency-key")
    if delivery is not None and not DELIVERY.match(delivery):
        delivery = hashlib.sha256(delivery.encode()).hexdigest()
    if event in ("pull_request", "Merge Request Hook"):
        return _pull_request(forge, delivery, _json(body))
    if event != "push":
        return Delivery(forge, event, delivery)
    payload = _json(body)
    ref = payload.get("ref")
    after = payload.get("after")
    if not isinstance(ref, str) or not ref.startswith("refs/heads/") or not isinstance(after, str):
        return Delivery(forge, "push-without-branch", delivery)
    commit = None if ZERO.match(after) else after
    if commit is not None and not COMMIT.match(commit):
        raise GitdError("the push event's `after` is not a commit id")
    return Delivery(forge, "push", delivery, ref[len("refs/heads/"):], commit)


PULL_ACTIONS = {"opened": "update", "reopened": "update", "synchronize": "update",
                "synchronized": "update", "open": "update", "reopen": "update",
                "update": "update", "closed": "close", "close": "close", "merge": "close"}
MAX_PULL = 10**9


def _pull_request(forge: str, delivery: str | None, payload: dict) -> Delivery:
    """GitHub's and Gitea's `pull_request`, GitLab's merge request: the
    preview of branch pr-N is updated to its head or closed."""
    if forge == "gitlab":
        attrs = payload.get("object_attributes")
        attrs = attrs if isinstance(attrs, dict) else {}
        number, action = attrs.get("iid"), attrs.get("action")
        head = (attrs.get("last_commit") or {}).get("id") \
            if isinstance(attrs.get("last_commit"), dict) else None
        ref = f"refs/merge-requests/{number}/head"
        same_repo = _same_id(attrs.get("source_project_id"), attrs.get("target_project_id"))
    else:
        number, action = payload.get("number"), payload.get("action")
        pull = payload.get("pull_request")
        pull = pull if isinstance(pull, dict) else {}
        head_of = pull.get("head") if isinstance(pull.get("head"), dict) else {}
        head = head_of.get("sha")
        ref = f"refs/pull/{number}/head"
        same_repo = _same_id(_repo_id(head_of), _repo_id(pull.get("base")))
    if isinstance(number, bool) or not isinstance(number, int) or not 0 < number <= MAX_PULL:
        raise GitdError("the pull request event has no number")
    action = PULL_ACTIONS.get(action) if isinstance(action, str) else None
    if action is None:
        return Delivery(forge, "pull_request-ignored", delivery)
    if action == "update" and not (isinstance(head, str) and COMMIT.match(head)):
        raise GitdError("the pull request event's head is not a commit id")
    if action == "update" and not same_repo:
        # anyone may open one from a fork of a public repository: its code
        # would run with the app's config and reach its services
        return Delivery(forge, "pull_request-from-a-fork", delivery)
    return Delivery(forge, "pull_request", delivery, previews.pull_branch(number),
                    head if action == "update" else None, ref, action)


def _repo_id(side) -> object:
    """The repository of a pull request's head or base (GitHub's and
    Gitea's `repo.id`, Gitea's `repo_id`); None when not said (a deleted fork)."""
    if not isinstance(side, dict):
        return None
    repo = side.get("repo")
    return side.get("repo_id") or (repo.get("id") if isinstance(repo, dict) else None)


def _same_id(a, b) -> bool:
    return isinstance(a, int) and not isinstance(a, bool) and a == b


def forge_of(h: Mapping[str, str]) -> str:
    if "x-gitea-event" in h or "x-forgejo-event" in h:
        return "gitea"
    if "x-gitlab-event" in h or "x-gitlab-token" in h:
        return "gitlab"
    if "x-github-event" in h:
        return "github"
    raise Unverified("not a webhook gitd knows (GitHub, GitLab, Gitea or Forgejo)")


def event_of(forge: str, h: Mapping[str, str]) -> str:
    if forge == "gitlab":
        return "push" if h.get("x-gitlab-event", "") == "Push Hook" else h.get("x-gitlab-event", "")[:50]
    name = h.get("x-gitea-event") or h.get("x-forgejo-event") if forge == "gitea" \
        else h.get("x-github-event")
    return (name or "")[:50]


def signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verified(forge: str, h: Mapping[str, str], body: bytes, secret: str) -> bool:
    # the digest is computed even without a secret: the answer takes as long
    expected = signature(secret or "\x00 no webhook", body)
    if forge == "gitlab":
        given = h.get("x-gitlab-token", "")
        return bool(secret) and hmac.compare_digest(given.encode(), secret.encode())
    if forge == "gitea":
        given = h.get("x-gitea-signature") or h.get("x-forgejo-signature") or ""
    else:
        given = h.get("x-hub-signature-256", "")
        if not given.startswith("sha256="):
            return False
        given = given[len("sha256="):]
    return bool(secret) and hmac.compare_digest(given.strip().lower().encode(), expected.encode())


def _json(body: bytes) -> dict:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise GitdError("the webhook's body is not JSON") from None
    if not isinstance(payload, dict):
        raise GitdError("the webhook's body is not a JSON object")
    return payload
