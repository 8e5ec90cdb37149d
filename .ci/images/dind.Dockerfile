# A Docker-in-Docker swarm node for tests: Debian's docker.io (the same
# engine as the host's) plus socat, which relays the manager's advertised
# 127.0.0.1:2377 to the host (see tests/e2e/test_nodes.py). Runs privileged.
FROM gitd-ci/debian:bookworm
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      docker.io socat iproute2 >/dev/null \
 && rm -rf /var/lib/apt/lists/*
CMD ["dockerd", "--storage-driver", "vfs"]
