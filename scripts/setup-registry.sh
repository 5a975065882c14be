#!/usr/bin/env bash
# Installs (once) the container registry the tests and `make demo` run on loopback: Debian's
# `docker-registry` package (the CNCF distribution registry), and apache2-utils for `htpasswd`,
# which writes the registry's password file (bcrypt) so that it asks for basic auth as ECR's
# registry does. Quick when both are there.
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ]; }
packages=()
have docker-registry || packages+=(docker-registry)
have htpasswd || packages+=(apache2-utils)
[ ${#packages[@]} -eq 0 ] && exit 0
echo "installing ${packages[*]} (the loopback registry the tests push images to) ..." >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null \
  || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null; }
