"""Which images a Dockerfile reads: `FROM`, `COPY --from`, `RUN --mount=from=`,
their `ONBUILD` forms, with `ARG` defaults substituted as Docker does.

Builds share one Docker engine, so without a check `FROM gitd/<other>:v3` or
`COPY --from=<another app's image id>` would hand over another app's code.
This module only finds the references, conservatively: anything it cannot
read with certainty (quotes, unsupported `${...}` forms, variables in
`--from`) is refused rather than guessed at. Deciding which references are
allowed is `buildpacks.dockerfile.check_references`.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

from gitd.core.errors import BuildError

DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*$")
# what an image reference (before substitution) may contain
REF_CHARS = re.compile(r"^[A-Za-z0-9._:/@${}+\-]+$")
VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-+])([^}$]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")
ARG_PAIR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$")


@dataclass(frozen=True)
class Reference:
    line: int
    instruction: str  # FROM, COPY --from, RUN --mount, ONBUILD COPY --from
    image: str  # as Docker will read it (variables substituted)


def instructions(text: str) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments) with continuations joined and
    comments dropped, honouring the `# escape=` parser directive."""
    escape = "\\"
    # as Docker reads it: a UTF-8 BOM skipped, lines split at \n alone (not
    # at the other breaks str.splitlines knows), a line continued only by
    # the escape followed by spaces or tabs
    lines = [line.removesuffix("\r") for line in text.removeprefix("\ufeff").split("\n")]
    start = 0
    for start, line in enumerate(lines):  # parser directives: only at the very top
        match = DIRECTIVE.match(line.strip())
        if not match:
            break
        if match.group(1).lower() == "escape":
            if match.group(2) not in ("\\", "`"):
                raise BuildError(f"Dockerfile: invalid escape directive {match.group(2)!r}")
            escape = match.group(2)
    else:
        start = len(lines)
    result = []
    current, first = "", 0
    for number, line in enumerate(lines[start:], start=start + 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments and empty lines, inside a continuation too
        if not current:
            first = number
        # Docker joins a continued line to the next as they are, with no
        # space between: `FROM gi\` + `td/x` is FROM gitd/x
        continued = re.search(re.escape(escape) + r"[ \t]*$", line)
        if continued:
            current += line[:continued.start()]
            continue
        current += line
        result.append(_instruction(first, current.strip()))
        current = ""
    if current.strip():
        result.append(_instruction(first, current.strip()))
    return result


def _instruction(line: int, text: str) -> tuple[int, str, str]:
    """Docker splits the instruction from its arguments at any whitespace:
    `FROM<tab>image` is a FROM."""
    word, *rest = text.split(None, 1)
    return line, word.upper(), (rest[0] if rest else "").strip()


def substitute(word: str, args: dict[str, str | None], line: int) -> str:
    """`$X`, `${X}`, `${X:-default}`, `${X:+alt}` as Docker expands them
    (undefined = empty). Anything else is refused."""
    if not REF_CHARS.fullmatch(word):
        raise BuildError(f"Dockerfile line {line}: cannot read the image reference {word!r} "
                         "(quotes, escapes and spaces are not supported there)")

    def one(match: re.Match) -> str:
        name = match.group(1) or match.group(4)
        if name in args and args[name] is None:
            raise BuildError(f"Dockerfile line {line}: the value of ARG {name} cannot be read "
                             "with certainty; write the image name out")
        value = args.get(name) or ""
        modifier, word = match.group(2), match.group(3)
        if modifier == ":-":
            return value or word
        if modifier == ":+":
            return word if value else ""
        return value

    result = VAR.sub(one, word)
    if "$" in result or "{" in result or "}" in result:
        raise BuildError(f"Dockerfile line {line}: unsupported substitution in {word!r} "
                         "(use $NAME, ${NAME}, ${NAME:-default} or ${NAME:+alt})")
    return result


def _arg_value(raw: str | None, args: dict[str, str | None], line: int) -> str | None:
    """An ARG default, quotes removed; None when it cannot be read for sure."""
    if raw is None:
        return ""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        raw = raw[1:-1]
    if not raw:
        return ""
    try:
        return substitute(raw, args, line)
    except BuildError:
        return None


def _declare_args(rest: str, scope: dict, globals_: dict, line: int) -> None:
    for token in rest.split():
        match = ARG_PAIR.match(token)
        if not match:
            raise BuildError(f"Dockerfile line {line}: cannot read ARG {token!r}")
        name, raw = match.group(1), match.group(2)
        if raw is None and name in globals_:
            scope[name] = globals_[name]  # `ARG X` in a stage takes the global default
        else:
            scope[name] = _arg_value(raw, scope, line)


def _flags(rest: str) -> tuple[dict[str, list[str]], str]:
    flags: dict[str, list[str]] = {}
    tokens = rest.split()
    while tokens and tokens[0].startswith("--"):
        name, _, value = tokens.pop(0)[2:].partition("=")
        flags.setdefault(name.lower(), []).append(value)
    return flags, " ".join(tokens)


def _mount_froms(values: list[str]) -> list[str]:
    froms = []
    for value in values:
        for part in value.split(","):
            key, _, val = part.partition("=")
            if key.strip().lower() == "from":
                froms.append(val.strip())
    return froms


def _no_variables(value: str, line: int, what: str) -> str:
    if "$" in value or not REF_CHARS.fullmatch(value or "-"):
        raise BuildError(f"Dockerfile line {line}: {what}={value!r}: variables are not allowed "
                         "there; name a stage (FROM image AS name) and use --from=name")
    return value


def references(text: str) -> tuple[list[Reference], list[str]]:
    """Every image the Dockerfile reads, and its stage names (lowercased).
    A `--from` naming an earlier stage, or a stage index, is not an image."""
    global_args: dict[str, str | None] = {}
    stage_args: dict[str, str | None] | None = None
    stages: list[str] = []
    refs: list[Reference] = []

    def from_refs(instruction: str, rest: str, line: int, prefix: str = "") -> None:
        flags, _ = _flags(rest)
        candidates = [("COPY --from", v) for v in flags.get("from", [])] if instruction == "COPY" else []
        if instruction == "RUN":
            candidates = [("RUN --mount", v) for v in _mount_froms(flags.get("mount", []))]
        for what, value in candidates:
            value = _no_variables(value, line, what)
            if value.lower() in stages or (value.isdigit() and int(value) < len(stages)):
                continue
            refs.append(Reference(line, prefix + what, value))

    for line, instruction, rest in instructions(text):
        if instruction == "ARG":
            _declare_args(rest, global_args if stage_args is None else stage_args, global_args, line)
        elif instruction == "FROM":
            flags, rest = _flags(rest)
            words = rest.split()
            if not words:
                raise BuildError(f"Dockerfile line {line}: FROM names no image")
            image = substitute(words[0], global_args, line)
            if image.lower() not in stages and image.lower() != "scratch":
                refs.append(Reference(line, "FROM", image))
            if len(words) >= 3 and words[1].lower() == "as":
                stages.append(words[2].lower())
            else:
                stages.append(f"#{len(stages)}")  # unnamed: only its index refers to it
            stage_args = {}
        elif instruction == "ONBUILD":
            _, inner, inner_rest = _instruction(line, rest or "ONBUILD")
            from_refs(inner, inner_rest, line, prefix="ONBUILD ")
        else:
            from_refs(instruction, rest, line)
    return refs, stages


def onbuild_references(triggers: list[str] | None) -> list[Reference]:
    """The images an image's ONBUILD triggers would read in a build FROM it."""
    refs = []
    for trigger in triggers or []:
        for ref in references(f"FROM scratch\n{trigger.strip()}")[0]:
            refs.append(Reference(0, f"ONBUILD {ref.instruction}", ref.image))
    return refs


# Labels only gitd may set: Traefik reads `traefik.*`; `gitd.*` name what
# gitd owns. A build's step containers carry the labels of the image being
# built, so a LABEL line would reach Traefik while the build runs, before
# the image can be refused at deploy.
RESERVED_LABEL_PREFIXES = ("traefik.", "gitd.")


def label_keys(rest: str, line: int) -> list[str]:
    """The keys a LABEL instruction's arguments set (`k=v ...`, or the
    legacy `k v`), unquoted."""
    try:
        words = shlex.split(rest, posix=True)
    except ValueError as exc:
        raise BuildError(f"Dockerfile line {line}: cannot parse LABEL: {exc}")
    if words and "=" not in words[0]:
        return [words[0]]
    return [word.split("=", 1)[0] for word in words if "=" in word]


def reserved_labels(text: str) -> list[tuple[int, str]]:
    """(line, key) of every LABEL (ONBUILD LABEL too) setting a key only
    gitd may set, or a key spelled with a variable (it could spell one)."""
    found = []
    for line, instruction, rest in instructions(text):
        if instruction == "ONBUILD" and rest:
            _, instruction, rest = _instruction(line, rest)
        if instruction != "LABEL":
            continue
        for key in label_keys(rest, line):
            if "$" in key or key.strip().lower().startswith(RESERVED_LABEL_PREFIXES):
                found.append((line, key))
    return found


def _arguments(rest: str) -> list[str]:
    """An instruction's arguments: the JSON form decoded (so `\\u003a` is
    the `:` Docker reads), else split at whitespace."""
    if rest.startswith("["):
        try:
            words = json.loads(rest)
        except ValueError:
            words = None
        if isinstance(words, list) and all(isinstance(w, str) for w in words):
            return words
    return rest.split()


def remote_sources(text: str) -> list[tuple[int, str]]:
    """(line, source) of every ADD (ONBUILD ADD too) source that is a URL,
    or spelled with a variable (it could spell one). Docker downloads an
    ADD URL itself, from the host's network, not from the build's
    container: it would reach what listens on the host's loopback or the
    cloud's metadata address."""
    found = []
    for line, instruction, rest in instructions(text):
        if instruction == "ONBUILD" and rest:
            _, instruction, rest = _instruction(line, rest)
        if instruction != "ADD":
            continue
        _, rest = _flags(rest)
        for source in _arguments(rest)[:-1]:
            if "://" in source or "$" in source:
                found.append((line, source))
    return found
