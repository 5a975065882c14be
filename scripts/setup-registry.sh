#!/usr/bin/env bash
# Installs (once) the container registry the tests and `make demo` run on loopback: Debian's
# `docker-registry` package (the CNCF distribution registry). Quick when it is already there.
set -euo pipefail
if command -v docker-registry >/dev/null 2>&1 || [ -x /usr/bin/docker-registry ]; then
  exit 0
fi
echo "installing docker-registry (the loopback registry the tests push images to) ..." >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y --no-install-recommends docker-registry >/dev/null \
  || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends docker-registry >/dev/null; }
