#!/usr/bin/env bash
# Installs the Debian packages vmigrate needs. Idempotent and quiet when
# everything is there already.
set -euo pipefail
pkgs=(qemu-system-x86 qemu-utils libvirt-dev libvirt-daemon-system busybox-static cpio iproute2 pkg-config gcc httperf apache2-utils)
missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing ${missing[*]}; run 'make deps' as root (or: sudo apt-get install ${missing[*]})" >&2
	exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
