#!/usr/bin/env bash
# Install the Debian packages Écluse needs. Idempotent: installs only what is missing.
# Usage: scripts/install-system-deps.sh [runtime|docker|test]  (test includes docker)
set -euo pipefail

RUNTIME_PKGS=(python3 python3-venv slapd ldap-utils bubblewrap nftables iproute2 procps psmisc
              util-linux e2fsprogs libcap2-bin ca-certificates)
TEST_PKGS=(postgresql chromium chromium-driver)
# the docker sandbox backend: the engine (started by Écluse or the tests themselves,
# never the system one), tini as the containers' init, debootstrap for the base image
DOCKER_PKGS=(docker.io tini debootstrap)

want=("${RUNTIME_PKGS[@]}")
if [ "${1:-runtime}" = "test" ]; then want+=("${TEST_PKGS[@]}" "${DOCKER_PKGS[@]}"); fi
if [ "${1:-runtime}" = "docker" ]; then want+=("${DOCKER_PKGS[@]}"); fi
# Node.js >= 18 for configurable-http-proxy and the JupyterLab extension build
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  want+=(nodejs npm)
fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "Écluse needs these Debian packages: ${missing[*]}" >&2
  echo "Run as root:  apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "Installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# docker.io's postinst would start a system dockerd with its own iptables rules:
# deny service starts during the install (policy-rc.d exit 101), unless the
# machine already has its own policy
own_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 0755 /usr/sbin/policy-rc.d
  own_policy=1
fi
trap '[ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts system daemons on install where it can; Écluse runs its own
# slapd and PostgreSQL on loopback, so the system ones are not needed.
