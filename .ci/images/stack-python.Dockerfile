# The python stack's build (and run) image for the stacks buildpack's tests:
# Debian's own packages, mapped with [base_images] python = "gitd-ci/stack-python".
FROM gitd-ci/debian:bookworm
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv python3-pip >/dev/null \
 && rm -rf /var/lib/apt/lists/*
