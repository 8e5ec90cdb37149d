"""A swarm of Docker-in-Docker nodes the test owns (issue #27): one network
it creates, a manager running gitd from its wheel with Traefik and a
registry the workers reach at the manager's address, and workers. The host
reaches gitd's SSH and Traefik only through ports published on 127.0.0.1.

Everything carries the label `gitd.test.cluster=<tag>` and is removed by id
in `Cluster.remove()`, whatever happened."""

import json
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import docker

from tests.e2e.harness import REPO, Gitd, make_key

CLUSTER_IMAGE = "gitd-ci/cluster-node:latest"
LABEL = "gitd.test.cluster"
# --privileged asks for every capability, and this machine's bounding set
# lacks CAP_SYS_RESOURCE (runc: "unable to apply caps"): name the rest.
DIND_CAPS = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
             "SETUID", "SETPCAP", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
             "IPC_LOCK", "IPC_OWNER", "SYS_CHROOT", "SYS_PTRACE", "SYS_ADMIN", "SYS_NICE",
             "MKNOD", "AUDIT_WRITE", "SETFCAP"]
DIST = REPO / ".ci" / "dist"  # gitd's wheel and its dependencies' (bash .ci/setup)
REGISTRY_PORT = 5000
SSH_PORT, HTTP_PORT = 2222, 80
DATA_DIR = "/var/lib/gitd"
# Debian's own config asks for htpasswd logins: a plain one, deletes allowed
# (apps:destroy deletes an app's manifests)
REGISTRY_CONFIG = f"""version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: :{REGISTRY_PORT}
"""


def wait_until(check, what: str, timeout: float = 60.0, pause: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(pause)
    raise AssertionError(f"gave up waiting for {what} ({timeout:.0f} s)")


@dataclass
class Node:
    container: object
    name: str
    addr: str = ""

    def sh(self, command: str, timeout: int = 120, check: bool = True) -> str:
        """`command` run by sh in the node: its output (stdout and stderr)."""
        result = self.container.exec_run(["timeout", str(timeout), "sh", "-c", command])
        output = result.output.decode(errors="replace")
        if check and result.exit_code != 0:
            raise AssertionError(f"{self.name}: `{command}` exited {result.exit_code}:\n{output}")
        return output

    def docker_json(self, command: str) -> list[dict]:
        """`docker COMMAND --format '{{json .}}'` in the node, one dict a line."""
        out = self.sh(f"docker {command} --format '{{{{json .}}}}'")
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def running(self) -> bool:
        self.container.reload()
        return self.container.status == "running"


@dataclass
class Cluster:
    client: docker.DockerClient
    root: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    network: object = None
    subnet: str = ""
    nodes: list = field(default_factory=list)
    gitd: Gitd | None = None
    starts: int = 0  # how many times gitd said it was listening

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[1:]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    @property
    def registry(self) -> str:
        return f"{self.manager.addr}:{REGISTRY_PORT}"

    # building it

    def create_network(self) -> None:
        self.network = self.client.networks.create(
            f"gitd-cluster-{self.tag}", driver="bridge", labels={LABEL: self.tag})
        self.network.reload()
        self.subnet = self.network.attrs["IPAM"]["Config"][0]["Subnet"]

    def start_node(self, role: str, index: int) -> Node:
        name = f"gitd-{role}{index}-{self.tag}"
        manager = role == "manager" and index == 1
        container = self.client.containers.run(
            CLUSTER_IMAGE,
            # every node trusts plain HTTP to registries on the test's network
            ["dockerd", "--storage-driver", "vfs", "--insecure-registry", self.subnet],
            name=name, hostname=name, detach=True, network=self.network.name,
            cap_add=DIND_CAPS, security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            # the node's own containers need the cgroup tree writable
            volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
                     **({str(DIST): {"bind": "/dist", "mode": "ro"},
                         str(self.root): {"bind": "/test", "mode": "ro"}} if manager else {})},
            cgroupns="host",
            ports={f"{SSH_PORT}/tcp": ("127.0.0.1", None),
                   f"{HTTP_PORT}/tcp": ("127.0.0.1", None)} if manager else {},
            labels={LABEL: self.tag, "gitd.test": "cluster-node"})
        node = Node(container, name)
        self.nodes.append(node)
        return node

    def wait_engines(self) -> None:
        for node in self.nodes:
            wait_until(lambda: node.container.exec_run(["docker", "info"]).exit_code == 0,
                       f"{node.name}'s dockerd", timeout=90)
            node.container.reload()
            node.addr = node.container.attrs["NetworkSettings"]["Networks"][
                self.network.name]["IPAddress"]

    def load_image(self, node: Node, image: str) -> None:
        """`docker save | docker load` from this machine's engine into the node's."""
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "exec", "-i", node.container.id, "docker", "load"],
                              stdin=save.stdout, capture_output=True, timeout=300)
        save.stdout.close()
        assert save.wait(timeout=60) == 0 and load.returncode == 0, load.stderr

    def form_swarm(self, managers: int, leader: int = 0) -> None:
        """The first `managers` nodes are managers; the swarm is made on
        nodes[leader] (its first leader: not gitd's node when leader > 0)."""
        first = self.nodes[leader]
        first.sh(f"docker swarm init --advertise-addr {first.addr}")
        tokens = {role: first.sh(f"docker swarm join-token -q {role}").strip()
                  for role in ("manager", "worker")}
        for index, node in enumerate(self.nodes):
            if node is first:
                continue
            role = "manager" if index < managers else "worker"
            node.sh(f"docker swarm join --advertise-addr {node.addr} "
                    f"--token {tokens[role]} {first.addr}:2377")

    def leader(self) -> str:
        """The hostname of the swarm's leader, as gitd's node sees it ("" while
        there is none: `docker node ls` fails then)."""
        out = self.manager.sh("docker node ls --format '{{json .}}'", check=False)
        nodes = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return next((n["Hostname"] for n in nodes if n.get("ManagerStatus") == "Leader"), "")

    def start_registry(self) -> None:
        """Debian's docker-registry on the manager, on all its addresses:
        the one every node pulls from (`registry = MANAGER_ADDR:5000`)."""
        (self.root / "registry.yml").write_text(REGISTRY_CONFIG)
        self.manager.container.exec_run(
            ["sh", "-c", "exec docker-registry serve /test/registry.yml "
             ">/var/log/registry.log 2>&1"], detach=True)
        wait_until(lambda: "200" in self.manager.sh(
            f"busybox wget -q -S -O /dev/null http://{self.registry}/v2/ 2>&1", check=False),
            "the registry")

    def install_gitd(self) -> None:
        wheel = sorted(DIST.glob("gitd-*.whl"))[-1].name
        self.manager.sh("python3 -m venv /opt/gitd && /opt/gitd/bin/pip install -q "
                        "--disable-pip-version-check --no-index --find-links /dist/wheels "
                        f"/dist/{wheel}", timeout=300)

    def init_gitd(self, settings: str = "") -> Gitd:
        """`settings`: more of gitd.toml (after scheduler and registry)."""
        admin = make_key(self.root, "admin")
        (self.root / "gitd.toml").write_text(
            f'scheduler = "swarm"\nregistry = "{self.registry}"\n{settings}')
        self.manager.sh(f"/opt/gitd/bin/gitd init --data-dir {DATA_DIR} "
                        f"--admin-key /test/admin.pub && cp /test/gitd.toml {DATA_DIR}/")
        ports = self.manager.container.attrs["NetworkSettings"]["Ports"]
        self.gitd = Gitd(root=self.root, data_dir=self.root / "not-here", admin_key=admin,
                         ssh_port=int(ports[f"{SSH_PORT}/tcp"][0]["HostPort"]),
                         http_port=int(ports[f"{HTTP_PORT}/tcp"][0]["HostPort"]), api_port=0)
        return self.gitd

    def start_gitd(self) -> None:
        """gitd serve on the manager, its pid in /run/gitd.pid (so a test
        stops that process and no other)."""
        self.manager.sh("rm -f /run/gitd.pid")
        self.manager.container.exec_run(
            ["sh", "-c", f"echo $$ > /run/gitd.pid; exec /opt/gitd/bin/gitd serve "
             f"--data-dir {DATA_DIR} --ssh-host 0.0.0.0 --ssh-port {SSH_PORT} "
             f"--http-host 0.0.0.0 --http-port {HTTP_PORT} --log-format json "
             ">>/var/log/gitd.log 2>&1"], detach=True, environment={"PATH": "/opt/gitd/bin:"
                                                                     "/usr/sbin:/usr/bin:/sbin:/bin"})
        wait_until(lambda: self.gitd_log().count('"listening"') > self.starts,
                   "gitd listening on the manager", timeout=120)
        self.starts += 1

    def stop_gitd(self) -> None:
        self.manager.sh("kill $(cat /run/gitd.pid)")
        wait_until(lambda: self.manager.container.exec_run(
            ["sh", "-c", "kill -0 $(cat /run/gitd.pid)"]).exit_code != 0,
            "gitd stopped on the manager", timeout=90)

    def gitd_log(self) -> str:
        return self.manager.sh("cat /var/log/gitd.log 2>/dev/null", check=False)

    # reading it

    def tasks(self, app: str) -> list[dict]:
        return self.running_tasks(f"gitd.app={app}")

    def tasks_of_service(self, name: str) -> list[dict]:
        """Those of a service gitd runs (services:create)."""
        return self.running_tasks(f"gitd.service={name}")

    def running_tasks(self, label: str) -> list[dict]:
        """The running tasks of the swarm services with `label`, seen by the
        manager, each with its node's hostname (`node`)."""
        services = self.manager.sh(f"docker service ls -q --filter label={label}").split()
        found = []
        for service in services:
            # (a retiring service may be removed between these commands: it has none)
            out = self.manager.sh(f"docker service ps -q --filter desired-state=running "
                                  f"{service} 2>/dev/null", check=False).split()
            if not out:
                continue
            tasks = json.loads(self.manager.sh(f"docker inspect {' '.join(out)} 2>/dev/null",
                                               check=False) or "[]")
            found += [t for t in tasks if t["Status"]["State"] == "running"]
        names = {n["ID"]: n["Hostname"] for n in self.manager.docker_json("node ls")}
        for task in found:
            task["node"] = names.get(task["NodeID"], task["NodeID"])
        return found

    def remove(self) -> None:
        """The nodes (with their anonymous volumes) and the network, by id.
        By the CLI: with vfs, removing a node that pulled a large image takes
        longer than the SDK's 60 s read timeout."""
        ids = [node.container.id for node in self.nodes]
        if ids:
            subprocess.run(["docker", "rm", "--force", "--volumes", *ids],
                           capture_output=True, timeout=900)
        if self.network is not None:
            subprocess.run(["docker", "network", "rm", self.network.id],
                           capture_output=True, timeout=120)


def build_cluster(client, root: Path, managers: int = 1, workers: int = 2,
                  images: tuple = (), settings: str = "", leader: int = 0) -> Cluster:
    """A started cluster, `images` of this machine's engine loaded into the
    manager's (gitd's node, nodes[0]); on any failure what was made is removed."""
    cluster = Cluster(client, root)
    try:
        cluster.create_network()
        for index in range(1, managers + 1):
            cluster.start_node("manager", index)
        for index in range(1, workers + 1):
            cluster.start_node("worker", index)
        cluster.wait_engines()
        for image in images:
            cluster.load_image(cluster.manager, image)
        cluster.form_swarm(managers, leader)
        cluster.start_registry()
        cluster.install_gitd()
        cluster.init_gitd(settings)
        cluster.start_gitd()
        return cluster
    except BaseException:
        cluster.remove()
        raise
