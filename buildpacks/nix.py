"""Build a Nix flake on the host and load the result into docker.

Two kinds of flake are served:

- one that exposes an image (`packages.<system>.docker`, `.dockerImage` or
  `.image`, or the app's `image_attr` option): a docker-archive tarball
  (dockerTools.buildLayeredImage) or a script writing one to stdout
  (dockerTools.streamLayeredImage). It is loaded as is, re-tagged and
  labelled on the way in.
- any other package (`packages.<system>.default`, or `package_attr`): its
  runtime closure becomes the image, one layer per store path, the most
  shared first, so on a rebuild docker keeps the layers it already has
  and stores only those that changed.

Builds share the host's Nix store; each release keeps a GC root (the
`--out-link` at `request.gc_root`) so a rollback never rebuilds.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Mapping

import docker.errors
import requests

from buildpacks import nix_sandbox
from buildpacks.base import BuildRequest, BuildResult
from gitd.core.errors import BuildError

NIX_FLAGS = nix_sandbox.TRUSTED_FLAGS  # an admin's build, as it always ran
IMAGE_ATTRS = ("docker", "dockerImage", "image")
MAX_LAYERS = 100  # docker's own limit is 127 (overlay2's lower dirs)
EPOCH = 1  # mtime of every file in a layer: same store path, same digest
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CHUNK = 1 << 20
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_ARCH = {"x86_64": ("x86_64-linux", "amd64"), "aarch64": ("aarch64-linux", "arm64"),
         "arm64": ("aarch64-linux", "arm64")}


class NixBuildpack:
    name = "nix"
    looks_for = "flake.nix"

    def detect(self, source_dir: Path) -> str | None:
        if (source_dir / "flake.nix").is_file():
            return "found flake.nix"
        return None

    def build(self, request: BuildRequest) -> BuildResult:
        emit = _serialized(request.emit)
        emit("-----> Building with Nix (flake.nix)")
        if not request.trusted:
            safe, why = nix_sandbox.status(request.env)
            if not safe:
                raise BuildError(
                    f"refusing to build flake.nix for a non-admin key: {why}. A deployer's "
                    "code may only run in a container or Nix's sandbox (see `gitd doctor`); "
                    "push with a Dockerfile, or ask an admin")
            lock = request.source_dir / "flake.lock"
            why_not = nix_sandbox.refuse_local_inputs(
                lock.read_text("utf-8", "replace") if lock.is_file() else None)
            if why_not:
                raise BuildError(why_not)
            emit("       building in Nix's sandbox (a non-admin key pushed)")
        nix = Nix(request.source_dir, request.env, emit, trusted=request.trusted,
                  timeout=request.timeout, cpus=request.limits.get("cpus"))
        nix.lock_source()
        system, _ = current_platform()
        attr, is_image = choose_attr(nix.package_names(system), request.options, system)
        installable = f"packages.{system}.{attr}"
        emit(f"-----> nix build {installable}")
        out = nix.build(installable, request.gc_root)
        try:
            if is_image:
                emit(f"-----> Loading the image {out} into docker")
                loaded = _load_image_output(Path(out), request, nix.env, emit)
            else:
                loaded = _load_closure_image(nix, out, system, request, emit)
            return _result(request, loaded, attr, out, emit)
        except BaseException:
            remove_gc_root(request.gc_root)  # a failed release keeps nothing alive
            raise


def remove_gc_root(path: Path) -> None:
    """Drop a release's GC root; its store paths go at the next `nix-store --gc`."""
    path = Path(path)
    if path.is_symlink():
        path.unlink()


def current_platform() -> tuple[str, str]:
    """(nix system, docker architecture) of this machine."""
    machine = platform.machine()
    if machine not in _ARCH:
        raise BuildError(f"the nix buildpack does not know this machine ({machine})")
    return _ARCH[machine]


# --- choices (pure) ---------------------------------------------------------


def choose_attr(names: list[str], options: Mapping[str, str], system: str) -> tuple[str, bool]:
    """Which `packages.<system>` attribute to build, and whether it is an image."""
    where = f"packages.{system}"
    found = ", ".join(names) or "nothing"
    for option, is_image in (("image_attr", True), ("package_attr", False)):
        wanted = options.get(option)
        if wanted:
            if wanted not in names:
                raise BuildError(f"{option}={wanted}, but the flake's {where} has: {found}")
            return wanted, is_image
    for name in IMAGE_ATTRS:
        if name in names:
            return name, True
    if "default" in names:
        return "default", False
    if len(names) == 1:
        return names[0], False
    raise BuildError(
        f"no {where}.default in flake.nix (it has: {found}); "
        "add one, or choose with buildpacks:set APP --attr IMAGE or --package NAME"
    )


def choose_command(
    program: str | None, web: str | None, shell: str | None, bins: list[str]
) -> list[str]:
    """The image's Cmd: the flake's default app, the Procfile, or the only binary."""
    if program:
        return [program]
    if web:
        # Without a shell in the closure, `$PORT` and friends are not expanded.
        return [shell, "-c", web] if shell else shlex.split(web)
    if len(bins) == 1:
        return bins
    listed = ", ".join(Path(b).name for b in bins) or "none"
    raise BuildError(
        "cannot tell how to start this app: add apps.<system>.default to flake.nix "
        f"or a `web:` line to the Procfile (the package's bin/ has: {listed})"
    )


def plan_layers(closure: Mapping[str, Iterable[str]], max_layers: int = MAX_LAYERS) -> list[list[str]]:
    """Store paths grouped into layers, the most shared first.

    A dependency many paths need rarely changes, and docker reuses a layer
    only when every layer below it is the same too, so the stable ones go
    first. Past `max_layers`, the least shared paths share the last layer.
    """
    score = popularity(closure)
    ordered = sorted(closure, key=lambda path: (-score[path], path))
    if len(ordered) <= max_layers:
        return [[path] for path in ordered]
    head, tail = ordered[: max_layers - 1], ordered[max_layers - 1 :]
    return [[path] for path in head] + [sorted(tail)]


def popularity(closure: Mapping[str, Iterable[str]]) -> Counter:
    """How many paths of the closure need each path, directly or not."""
    requisites: dict[str, set[str]] = {}

    def visit(path: str) -> set[str]:
        if path not in requisites:
            requisites[path] = set()  # a self-reference stops here
            found: set[str] = set()
            for ref in closure.get(path, ()):
                if ref != path:
                    found |= {ref} | visit(ref)
            requisites[path] = found
        return requisites[path]

    counts: Counter = Counter({path: 0 for path in closure})
    for path in closure:
        counts.update(visit(path))
    return counts


def image_config(
    cmd: list[str], path_dirs: list[str], labels: Mapping[str, str],
    layers: list[Layer], arch: str, created: str,
) -> dict:
    # Only the layers need to be reproducible; `created` is the real time so
    # `docker images` reads sensibly (labels change per release anyway).
    return {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {
            "Cmd": cmd,
            "Env": ["PATH=" + ":".join([*path_dirs, DEFAULT_PATH])],
            "Labels": dict(sorted(labels.items())),
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        "history": [{"created": created, "created_by": layer.describe()} for layer in layers],
    }


def human_size(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


# --- nix --------------------------------------------------------------------


class Nix:
    """The nix commands a build needs, each streaming its stderr to `emit`."""

    def __init__(self, source_dir: Path, env: Mapping[str, str] | None, emit: Callable[[str], None],
                 trusted: bool = True, timeout: float | None = None, cpus: str | None = None):
        self.env = dict(os.environ if env is None else env)
        self.emit = emit
        self.flags = nix_sandbox.flags(trusted, cpus)
        self.trusted = trusted
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.flake = f"path:{Path(source_dir).resolve()}"
        self.nix = shutil.which("nix", path=self.env.get("PATH", os.defpath))
        if not self.nix:
            raise BuildError("nix is not installed on this server (needed to build flake.nix)")

    def lock_source(self) -> None:
        """Copy the source into the store once; later calls name that copy by hash."""
        metadata = json.loads(self.run(["flake", "metadata", "--json", self.flake], "cannot read flake.nix"))
        self.flake = metadata.get("url") or self.flake

    def package_names(self, system: str) -> list[str]:
        what = f"packages.{system}"
        stdout = self.run(["eval", "--json", f"{self.flake}#{what}", "--apply", "builtins.attrNames"],
                          f"nix eval {what} failed")
        return json.loads(stdout)

    def app_program(self, system: str) -> str | None:
        """`apps.<system>.default.program`, or None when the flake has no such app."""
        what = f"apps.{system}.default.program"
        try:
            return self.run(["eval", "--raw", f"{self.flake}#{what}"], f"nix eval {what} failed", quiet=True)
        except NixFailed as failed:
            if failed.missing_attribute:
                return None
            failed.show(self.emit)
            raise BuildError(f"nix eval {what} failed: {failed.summary}")

    def build(self, installable: str, out_link: Path) -> str:
        out_link = Path(out_link)
        out_link.parent.mkdir(parents=True, exist_ok=True)
        args = ["build", "--print-build-logs", "--json", "--out-link", str(out_link),
                f"{self.flake}#{installable}"]
        built = json.loads(self.run(args, f"nix build {installable} failed"))
        outputs = built[0]["outputs"]
        return outputs.get("out") or next(iter(outputs.values()))

    def closure(self, out: str) -> dict[str, list[str]]:
        """Every store path `out` needs at run time, with its references."""
        infos = json.loads(self.run(["path-info", "--recursive", "--json", out], f"nix path-info {out} failed"))
        return {info["path"]: info.get("references", []) for info in infos}

    def run(self, args: list[str], failure: str, *, quiet: bool = False) -> str:
        """Run nix; stderr goes to emit line by line (unless quiet), stdout is returned."""
        try:
            proc = subprocess.Popen(
                [self.nix, *self.flags, *args, *nix_sandbox.command_flags(self.trusted, args)],
                env=self.env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise BuildError(f"cannot run nix: {exc}")
        # evaluation and builds share one deadline (build_timeout)
        timed_out = threading.Event()
        watchdog = None
        if self.deadline is not None:
            def kill():
                timed_out.set()
                _stop(proc)
            watchdog = threading.Timer(max(0.0, self.deadline - time.monotonic()), kill)
            watchdog.daemon = True
            watchdog.start()
        stdout = _drain_in_thread(proc.stdout)
        tail: deque[str] = deque(maxlen=200)
        try:
            for line in _lines(proc.stderr):
                tail.append(line)
                if not quiet:
                    self.emit(f"       {line}")
        except BaseException:
            _stop(proc)  # the build was abandoned: do not leave nix running
            raise
        finally:
            if watchdog:
                watchdog.cancel()
        if timed_out.is_set():
            proc.wait()
            raise BuildError(f"the Nix build ran longer than {self.timeout:g}s (build_timeout) "
                             "and was stopped")
        if proc.wait() != 0:
            failed = NixFailed(list(tail))
            if quiet:
                raise failed
            raise BuildError(f"{failure}: {failed.summary}")
        return stdout.result().decode()


class NixFailed(Exception):
    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines

    @property
    def missing_attribute(self) -> bool:
        return any("does not provide attribute" in line for line in self.lines)

    @property
    def summary(self) -> str:
        for line in self.lines:
            if line.startswith("error:"):
                return line[len("error:"):].strip()
        return self.lines[-1].strip() if self.lines else "no output"

    def show(self, emit: Callable[[str], None]) -> None:
        for line in self.lines:
            emit(f"       {line}")


# --- the closure as an image ------------------------------------------------


@dataclass
class Layer:
    paths: list[str]
    file: Path
    digest: str  # sha256:<hex> of the uncompressed tar (docker's diff id)

    def describe(self) -> str:
        if not self.paths:
            return "gitd: /tmp"
        if len(self.paths) == 1:
            return f"nix: {self.paths[0]}"
        return f"nix: {len(self.paths)} store paths"


def _load_closure_image(nix: Nix, out: str, system: str, request: BuildRequest, emit) -> Loaded:
    closure = nix.closure(out)
    plan = plan_layers(closure, MAX_LAYERS - 1)  # one is the base layer
    cmd = _command(nix, out, system, closure, request)
    _, arch = current_platform()
    emit(f"-----> Assembling an image from {len(closure)} store paths")
    emit(f"       command: {shlex.join(cmd)}")
    layer_dir = Path(request.work_dir) / "nix-layers"
    layer_dir.mkdir(parents=True, exist_ok=True)
    layers = [write_base_layer(layer_dir / "base.tar")]
    layers += [write_layer(paths, layer_dir / f"{i}.tar") for i, paths in enumerate(plan)]
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = image_config(cmd, [f"{out}/bin"], request.labels, layers, arch, created)
    return _docker_load(
        request.docker, lambda sink: write_docker_archive(sink, layers, config, request.image_tag)
    )


def _command(nix: Nix, out: str, system: str, closure: Mapping, request: BuildRequest) -> list[str]:
    program = nix.app_program(system)
    if program and _store_path_of(program, out) not in closure:
        raise BuildError(
            f"apps.{system}.default.program ({program}) is outside the runtime closure "
            f"of the package built; point it into that package"
        )
    bin_dir = Path(out) / "bin"
    bins = sorted(str(p) for p in bin_dir.iterdir()) if bin_dir.is_dir() else []
    return choose_command(program, request.procfile.get("web"), _find_shell(out, closure), bins)


def _store_path_of(path: str, sibling: str) -> str:
    """The top store path holding `path` (the store dir is `sibling`'s parent)."""
    store = str(Path(sibling).parent)
    rest = os.path.relpath(path, store)
    return f"{store}/{rest.split('/', 1)[0]}"


def _find_shell(out: str, closure: Iterable[str]) -> str | None:
    for path in [out, *sorted(p for p in closure if p != out)]:
        if os.access(f"{path}/bin/sh", os.X_OK):
            return f"{path}/bin/sh"
    return None


def write_layer(store_paths: list[str], dest: Path) -> Layer:
    """A deterministic tar of the store paths: sorted, mtime 1, owned by root."""
    with open(dest, "wb") as file:
        sink = _HashingWriter(file)
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.GNU_FORMAT) as tar:
            for directory in _parent_dirs(store_paths):
                tar.addfile(_tar_info(directory, tarfile.DIRTYPE, 0o755))
            for path in sorted(store_paths):
                _add_tree(tar, path)
    return Layer(paths=list(store_paths), file=dest, digest="sha256:" + sink.hash.hexdigest())


def write_base_layer(dest: Path) -> Layer:
    """What a closure lacks and most programs expect: a writable /tmp."""
    with open(dest, "wb") as file:
        sink = _HashingWriter(file)
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.GNU_FORMAT) as tar:
            tar.addfile(_tar_info("tmp", tarfile.DIRTYPE, 0o1777))
    return Layer(paths=[], file=dest, digest="sha256:" + sink.hash.hexdigest())


def _parent_dirs(paths: Iterable[str]) -> list[str]:
    parents = set()
    for path in paths:
        parts = Path(path).parts[1:-1]  # ("nix", "store") for /nix/store/x
        parents.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(parents)


def _add_tree(tar: tarfile.TarFile, path: str) -> None:
    # Built by hand rather than with tar.add: it would record hard links
    # between files that `nix-store --optimise` happened to merge.
    st = os.lstat(path)
    mode = st.st_mode & 0o7777
    name = path.lstrip("/")
    if os.path.islink(path):
        tar.addfile(_tar_info(name, tarfile.SYMTYPE, mode, linkname=os.readlink(path)))
    elif os.path.isdir(path):
        tar.addfile(_tar_info(name, tarfile.DIRTYPE, mode))
        for child in sorted(os.listdir(path)):
            _add_tree(tar, os.path.join(path, child))
    elif os.path.isfile(path):
        with open(path, "rb") as file:
            tar.addfile(_tar_info(name, tarfile.REGTYPE, mode, size=st.st_size), file)


def _tar_info(name: str, kind: bytes, mode: int, *, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, linkname
    info.mtime, info.uid, info.gid, info.uname, info.gname = EPOCH, 0, 0, "", ""
    return info


def write_docker_archive(sink: BinaryIO, layers: list[Layer], config: dict, tag: str) -> None:
    """The classic `docker save` layout that `docker load` reads."""
    config_bytes = _json_bytes(config)
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_names = [f"{layer.digest.split(':', 1)[1]}/layer.tar" for layer in layers]
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": layer_names}]
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        for layer, name in zip(layers, layer_names):
            info = _tar_info(name, tarfile.REGTYPE, 0o644, size=layer.file.stat().st_size)
            with open(layer.file, "rb") as file:
                tar.addfile(info, file)
        _add_bytes(tar, config_name, config_bytes)
        _add_bytes(tar, "manifest.json", _json_bytes(manifest))


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM first: nix then kills its builders (they run in sessions of
    their own, so SIGKILL to nix alone would leave them running)."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- an image the flake built -------------------------------------------------


def _load_image_output(out: Path, request: BuildRequest, env: Mapping[str, str], emit) -> Loaded:
    if out.is_dir() or not out.exists():
        raise BuildError(
            f"{out} is not an image: expected a docker-archive tarball "
            "(dockerTools.buildLayeredImage) or a script that writes one (streamLayeredImage)"
        )
    if _looks_like_archive(out):
        with open(out, "rb") as source:
            return _docker_load(request.docker, lambda sink: retag_archive(
                source, sink, request.image_tag, request.labels))
    if not os.access(out, os.X_OK):
        raise BuildError(f"{out} is neither a tar archive nor an executable that writes one")
    if not request.trusted:
        # the script would run on the host, outside any sandbox
        raise BuildError(
            f"{out} is a script that writes the image (streamLayeredImage): it would run on "
            "the host, which only admins' pushes may do; build a tarball "
            "(dockerTools.buildLayeredImage) instead")
    return _load_streamed(out, request, env, emit)


def _load_streamed(script: Path, request: BuildRequest, env: Mapping[str, str], emit) -> Loaded:
    proc = subprocess.Popen(
        [str(script)], env=dict(env), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    stderr = _Background(lambda: _emit_lines(proc.stderr, emit))
    failure: BuildError | None = None
    try:
        loaded = _docker_load(request.docker, lambda sink: retag_archive(
            proc.stdout, sink, request.image_tag, request.labels))
    except BuildError as exc:
        failure = exc
    except BaseException:
        proc.kill()
        raise
    finally:
        proc.stdout.close()
    status = proc.wait()
    stderr.result()
    # A script killed by the pipe we closed did not fail on its own.
    killed_by_pipe = status in (-signal.SIGPIPE, 128 + signal.SIGPIPE)
    if status != 0 and not killed_by_pipe:
        raise BuildError(f"{script.name} (the image stream script) exited with status {status}")
    if failure:
        raise failure
    return loaded


def _looks_like_archive(path: Path) -> bool:
    with open(path, "rb") as file:
        head = file.read(512)
    return head[:2] == b"\x1f\x8b" or head[257:262] == b"ustar"


def retag_archive(source: BinaryIO, sink: BinaryIO, tag: str, labels: Mapping[str, str]) -> None:
    """Copy a docker archive, tagging its image `tag` and adding `labels`.

    The stream is rewritten on the way to docker: layers pass through, the
    manifest gets our tag (not the one nix chose, which could move another
    image's tag), the image config gets the labels. Docker reads the config
    under the file name the manifest gives, without checking it.
    """
    with tarfile.open(fileobj=source, mode="r|*") as src, \
            tarfile.open(fileobj=sink, mode="w|", format=tarfile.GNU_FORMAT) as dst:
        for member in src:
            name = member.name[2:] if member.name.startswith("./") else member.name
            if not _is_top_json(member, name):
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
                continue
            data = src.extractfile(member).read()
            if name == "manifest.json":
                data = _retag_manifest(data, tag)
            else:
                data = _relabel_config(data, labels)
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))


def _is_top_json(member: tarfile.TarInfo, name: str) -> bool:
    return member.isfile() and "/" not in name and name.endswith(".json")


def _retag_manifest(data: bytes, tag: str) -> bytes:
    manifest = json.loads(data)
    for i, entry in enumerate(manifest):
        entry["RepoTags"] = [tag] if i == 0 else []
    return _json_bytes(manifest)


def _relabel_config(data: bytes, labels: Mapping[str, str]) -> bytes:
    config = json.loads(data)
    if not isinstance(config, dict) or "rootfs" not in config:
        return data
    section = config.get("config") or {}
    section["Labels"] = {**(section.get("Labels") or {}), **labels}
    config["config"] = section
    return _json_bytes(config)


# --- docker -----------------------------------------------------------------


@dataclass
class Loaded:
    loaded_layers: set[str]  # short ids of the layers docker had to unpack


def _docker_load(client, write_archive: Callable[[BinaryIO], None]) -> Loaded:
    """Stream the archive `write_archive` produces into `docker load`."""
    read_fd, write_fd = os.pipe()
    writer = _Background(lambda: _write_to_fd(write_fd, write_archive))
    try:
        with open(read_fd, "rb") as source:
            chunks = iter(lambda: source.read(CHUNK), b"")
            events = client.api.load_image(chunks, quiet=False)
            loaded = _read_load_events(events)
    except (docker.errors.DockerException, requests.RequestException) as exc:
        _raise_writer_error(writer)  # a broken archive explains docker's error best
        raise BuildError(f"docker load failed: {getattr(exc, 'explanation', None) or exc}")
    except BuildError:
        _raise_writer_error(writer)
        raise
    _raise_writer_error(writer)
    return loaded


def _write_to_fd(fd: int, write_archive: Callable[[BinaryIO], None]) -> None:
    try:
        with open(fd, "wb") as sink:
            write_archive(sink)
    except BrokenPipeError:
        pass  # docker stopped reading; its own error says why


def _raise_writer_error(writer: _Background) -> None:
    try:
        writer.result()
    except BuildError:
        raise
    except Exception as exc:
        raise BuildError(f"could not write the image archive: {exc}") from exc


def _read_load_events(events) -> Loaded:
    loaded: set[str] = set()
    for event in events:
        if "error" in event:
            detail = (event.get("errorDetail") or {}).get("message") or event["error"]
            raise BuildError(f"docker load failed: {detail}")
        if event.get("status") == "Loading layer" and event.get("id"):
            loaded.add(event["id"])
    return Loaded(loaded_layers=loaded)


def _result(request: BuildRequest, loaded: Loaded, attr: str, out: str, emit) -> BuildResult:
    try:
        image = request.docker.images.get(request.image_tag)
    except docker.errors.DockerException as exc:
        raise BuildError(f"docker did not keep {request.image_tag}: {exc}")
    diff_ids = image.attrs.get("RootFS", {}).get("Layers") or []
    reused = sum(1 for d in diff_ids if d.split(":", 1)[-1][:12] not in loaded.loaded_layers)
    size = int(image.attrs.get("Size") or 0)
    plural = "" if len(diff_ids) == 1 else "s"
    emit(f"       image: {len(diff_ids)} layer{plural} ({reused} reused), {human_size(size)}")
    details = {"layers": len(diff_ids), "layers_reused": reused, "size": size,
               "attr": attr, "out_path": out}
    return BuildResult(image_id=image.id, details=details)


# --- small helpers ------------------------------------------------------------


class _HashingWriter:
    def __init__(self, file: BinaryIO):
        self.file = file
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return self.file.write(data)


class _Background:
    """A function run in a daemon thread; result() re-raises what it raised."""

    def __init__(self, fn: Callable[[], object]):
        self._value: object = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn):
        try:
            self._value = fn()
        except BaseException as exc:  # handed to the caller in result()
            self._error = exc

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _drain_in_thread(stream: BinaryIO) -> _Background:
    # stdout is read aside so a large `path-info --json` cannot fill the pipe
    # while stderr is being streamed.
    return _Background(stream.read)


def _emit_lines(stream: BinaryIO, emit: Callable[[str], None]) -> None:
    for line in _lines(stream):
        emit(f"       {line}")


def _lines(stream: BinaryIO) -> Iterable[str]:
    for raw in stream:
        line = _ANSI.sub("", raw.decode(errors="replace")).rstrip()
        if line:
            yield line


def _serialized(emit: Callable[[str], None]) -> Callable[[str], None]:
    """emit, safe to call from the threads that pump a stream script's stderr."""
    lock = threading.Lock()

    def locked(line: str) -> None:
        with lock:
            emit(line)
    return locked


def _json_bytes(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_tar_info(name, tarfile.REGTYPE, 0o644, size=len(data)), io.BytesIO(data))
