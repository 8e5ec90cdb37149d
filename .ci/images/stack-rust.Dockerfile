# The rust stack's build (and run) image for the stacks buildpack's tests:
# Debian's own packages, mapped with [base_images] rust = "gitd-ci/stack-rust".
FROM gitd-ci/debian:bookworm
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cargo >/dev/null \
 && rm -rf /var/lib/apt/lists/*
