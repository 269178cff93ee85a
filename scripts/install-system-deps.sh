#!/usr/bin/env bash
# Installs the Debian packages the benchmark and the browser/proxy tests use. Safe to re-run:
# packages already present are skipped. Needs root (or sudo) and the Debian package mirror.
set -euo pipefail

packages=(wrk)
for extra in "$@"; do packages+=("$extra"); done

missing=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
# Another apt run (a colleague's, unattended upgrades) may hold the lock: wait for it.
apt_opts=(-o DPkg::Lock::Timeout=300)
$SUDO apt-get "${apt_opts[@]}" update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${apt_opts[@]}" install -y -qq \
  --no-install-recommends "${missing[@]}"
