"""Native git over OpenSSH, for baselines that pay the same transport as
gitd: a throwaway sshd on 127.0.0.1 (Debian's openssh-server) serving git's
own upload-pack and receive-pack for one key."""

from __future__ import annotations

import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.harness import free_port

SSHD = "/usr/sbin/sshd"


def available() -> bool:
    return Path(SSHD).exists() and shutil.which("ssh-keygen") is not None


@contextmanager
def native_sshd(root: Path, client_key: Path):
    """Yields (url_prefix, env): `git clone {url_prefix}/abs/path.git` with
    `env` reaches git on this machine through a real sshd."""
    root.mkdir(parents=True, exist_ok=True)
    host_key = root / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    authorized = root / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {authorized}\nPidFile {root / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ssh = (f"ssh -i {client_key} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
           "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = subprocess.run([*ssh.split(), "-p", str(port), "root@127.0.0.1", "true"],
                                   capture_output=True)
            if probe.returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise SystemExit("the baseline sshd did not start")
        yield f"ssh://root@127.0.0.1:{port}", {"GIT_SSH_COMMAND": ssh}
    finally:
        proc.terminate()
        proc.wait(10)
