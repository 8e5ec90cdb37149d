"""Flakes for the nix buildpack's tests, written into a directory.

No nixpkgs is reachable here, so every flake has no inputs: plain
`derivation`s whose builder is /bin/sh and whose tools come from the
static /bin/busybox (Debian's busybox-static), which also makes the
closures runnable in an otherwise empty image.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from buildpacks.nix import current_platform
from tests.conftest import require

SYSTEM, ARCH = current_platform()

# `sh name script`: a derivation built by one /bin/sh script.
_PRELUDE = """
      system = "%(system)s";
      sh = name: script: derivation {
        inherit name system;
        builder = "/bin/sh";
        args = [ "-c" script ];
      };
""" % {"system": SYSTEM}


def _flake(let_body: str, outputs: str) -> str:
    return "{\n  outputs = { self }:\n    let\n%s%s    in {\n%s    };\n}\n" % (
        _PRELUDE, let_body, outputs)


def write_web_flake(
    directory: Path, message: str = "hello from nix", with_app: bool = True, salt: str | None = None,
    store_salt: str | None = None,
) -> Path:
    """A package whose closure is busybox + static assets + the app.

    `apps.<system>.default` runs busybox httpd on $PORT (default 5000),
    serving an index.html that holds `message`. Changing `message` changes
    only the app's store path: busybox and the assets stay as they were.
    `salt` (random by default) also goes into the app only, so its build
    really runs, and logs, in every test run. `store_salt` (none by
    default) goes into busybox and the assets too: every path is new to the
    store and to docker, as for an app whose dependencies were never built.
    """
    store_line = f"        : store salt {store_salt}\n" if store_salt else ""
    let_body = r"""
      busybox = sh "busybox" ''
        /bin/busybox mkdir -p $out/bin
        /bin/busybox cp /bin/busybox $out/bin/busybox
%(store_line)s      '';
      assets = sh "assets" ''
        /bin/busybox mkdir -p $out
        /bin/busybox printf 'body { color: teal }\n' > $out/style.css
%(store_line)s      '';
      app = sh "hello-web" ''
        B=/bin/busybox
        $B mkdir -p $out/bin $out/www
        $B printf '%%s\n' "%(message)s" > $out/www/index.html
        $B ln -s ${assets}/style.css $out/www/style.css
        $B printf '#!${busybox}/bin/busybox sh\nexec ${busybox}/bin/busybox httpd -f -p "''${PORT:-5000}" -h '$out'/www\n' > $out/bin/serve
        $B chmod 555 $out/bin/serve
        echo "built hello-web"  # salt: %(salt)s
      '';
""" % {"message": message.replace('"', ""), "salt": salt or uuid.uuid4().hex,
       "store_line": store_line}
    outputs = "      packages.${system}.default = app;\n"
    if with_app:
        outputs += '      apps.${system}.default = { type = "app"; program = "${app}/bin/serve"; };\n'
    return _write(directory, _flake(let_body, outputs))


# A docker-archive made by hand: one layer holding /bin/busybox, a config
# whose Cmd echoes the attribute's name, and a manifest tagging it with a
# name nix chose (the buildpack must replace it with the release's tag).
_IMAGE_ROOT = r"""
      imageRoot = name: sh "image-root-${name}" ''
        B=/bin/busybox
        $B mkdir -p root/bin $out
        $B cp /bin/busybox root/bin/busybox
        (cd root && $B tar -cf ../layer.tar bin)
        d=$($B sha256sum layer.tar | $B cut -d' ' -f1)
        $B mkdir $out/$d
        $B cp layer.tar $out/$d/layer.tar
        $B printf '{"architecture":"%(arch)s","os":"linux","config":{"Cmd":["/bin/busybox","echo","${name}"],"Labels":{"fixture":"${name}"}},"rootfs":{"type":"layers","diff_ids":["sha256:%%s"]}}' $d > $out/config.json
        $B printf '[{"Config":"config.json","RepoTags":["nix-fixture/${name}:latest"],"Layers":["%%s/layer.tar"]}]' $d > $out/manifest.json
      '';
      # like dockerTools.buildLayeredImage: the out path is a .tar.gz
      tarball = name: sh "${name}.tar.gz" ''
        cd ${imageRoot name} && /bin/busybox tar -cf - . | /bin/busybox gzip > $out
      '';
      # like dockerTools.streamLayeredImage: the out path writes the tar to stdout
      stream = name: sh "stream-${name}" ''
        /bin/busybox printf '#!/bin/sh\necho "streaming ${name}" >&2\ncd ${imageRoot name} && exec /bin/busybox tar -cf - .\n' > $out
        /bin/busybox chmod 555 $out
      '';
      # a stream script that fails before writing anything
      broken-stream = name: sh "broken-stream-${name}" ''
        /bin/busybox printf '#!/bin/sh\necho "cannot stream ${name}" >&2\nexit 4\n' > $out
        /bin/busybox chmod 555 $out
      '';
""" % {"arch": ARCH}


def write_image_flake(directory: Path, images: dict[str, str], with_default: bool = True) -> Path:
    """A flake exposing images: `images` maps attribute -> "tarball" | "stream" | "broken-stream"."""
    packages = "".join(f'        {attr} = {kind} "{attr}";\n' for attr, kind in images.items())
    if with_default:
        packages += '        default = sh "unused" "/bin/busybox mkdir $out";\n'
    outputs = "      packages.${system} = {\n%s      };\n" % packages
    return _write(directory, _flake(_IMAGE_ROOT, outputs))


# Images that serve HTTP: /bin/busybox and /www/index.html holding a
# message, started as busybox httpd on $PORT (5000 by default). The shell
# form of Cmd needs no /bin/sh: busybox is its own shell.
_WEB_IMAGE_ROOT = r"""
      webImageRoot = name: message: sh "web-image-root-${name}" ''
        B=/bin/busybox
        $B mkdir -p root/bin root/www root/tmp $out
        $B chmod 1777 root/tmp
        $B cp /bin/busybox root/bin/busybox
        echo "${message}" > root/www/index.html
        (cd root && $B tar -cf ../layer.tar bin tmp www)
        d=$($B sha256sum layer.tar | $B cut -d' ' -f1)
        $B mkdir $out/$d
        $B cp layer.tar $out/$d/layer.tar
        $B cat > $out/config.json <<'EOF'
      {"architecture":"@ARCH@","os":"linux","config":{"Cmd":["/bin/busybox","sh","-c","exec /bin/busybox httpd -f -p \"''${PORT:-5000}\" -h /www"],"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:DIFFID"]}}
      EOF
        $B sed -i "s/DIFFID/$d/" $out/config.json
        echo "[{\"Config\":\"config.json\",\"RepoTags\":[\"nix-fixture/${name}:latest\"],\"Layers\":[\"$d/layer.tar\"]}]" > $out/manifest.json
      '';
      webTarball = name: message: sh "${name}.tar.gz" ''
        cd ${webImageRoot name message} && /bin/busybox tar -cf - . | /bin/busybox gzip > $out
      '';
      webStream = name: message: sh "stream-${name}" ''
        /bin/busybox printf '#!/bin/sh\necho "streaming ${name}" >&2\ncd ${webImageRoot name message} && exec /bin/busybox tar -cf - .\n' > $out
        /bin/busybox chmod 555 $out
      '';
""".replace("@ARCH@", ARCH)


def write_web_image_flake(directory: Path, images: dict[str, tuple[str, str]],
                          with_default: bool = False) -> Path:
    """A flake whose `packages.<system>` are images that serve HTTP on $PORT.

    `images` maps attribute -> ("tarball" | "stream", message); each image
    answers `GET /` with its message. `with_default` adds a `default`
    package that is not an image (so an image must be chosen by name).
    """
    packages = "".join(
        '        %s = web%s "%s" "%s";\n' % (attr, kind.capitalize(), attr, message.replace('"', ""))
        for attr, (kind, message) in images.items())
    if with_default:
        packages += '        default = sh "unused" "/bin/busybox mkdir $out";\n'
    outputs = "      packages.${system} = {\n%s      };\n" % packages
    return _write(directory, _flake(_WEB_IMAGE_ROOT, outputs))


def write_failing_flake(directory: Path) -> Path:
    """Evaluates, but its builder prints a line and fails."""
    let_body = r"""
      broken = sh "broken" ''
        echo "boom: this build fails on purpose"
        exit 3
      '';
"""
    return _write(directory, _flake(let_body, "      packages.${system}.default = broken;\n"))


def write_unparsable_flake(directory: Path) -> Path:
    return _write(directory, "{ outputs = { self }: { packages = ; }; }\n")


def _write(directory: Path, text: str) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "flake.nix").write_text(text)
    lock = directory / "flake.lock"
    if lock.exists():
        lock.unlink()
    return directory


def require_nix_and_docker():
    """A docker client; fails without nix or a running docker engine."""
    missing = []
    if not shutil.which("nix"):
        missing.append("nix")
    client = None
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception:
        missing.append("a running docker engine")
    require(not missing, "the nix buildpack's tests need " + " and ".join(missing))
    return client
