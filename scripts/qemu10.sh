#!/usr/bin/env bash
# Unpacks QEMU 10.0 from bookworm-backports beside the system's QEMU 7.2
# (into the cache, without installing it) and prints the binary's path.
# Run by `make deps`; see docs/qemu-versions.md.
set -euo pipefail
cache=${VMIGRATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmigrate}
dest=$cache/qemu10
bin=$dest/root/usr/bin/qemu-system-x86_64
if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
	echo "$bin"
	exit 0
fi
src=/etc/apt/sources.list.d/vmigrate-backports.sources
if ! apt-cache policy qemu-system-x86 2>/dev/null | grep -q bookworm-backports; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "qemu10: bookworm-backports is not in apt's sources; run as root" >&2
		exit 1
	fi
	cat >"$src" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	apt-get update -qq >&2
fi
rm -rf "$dest.tmp" && mkdir -p "$dest.tmp/debs" "$dest.tmp/root"
cd "$dest.tmp/debs"
apt-get download -qq -o APT::Sandbox::User=root qemu-system-x86/bookworm-backports qemu-system-common/bookworm-backports \
	qemu-system-data/bookworm-backports seabios/bookworm-backports >&2 ||
	apt-get download -qq -o APT::Sandbox::User=root qemu-system-x86/bookworm-backports qemu-system-common/bookworm-backports \
		qemu-system-data/bookworm-backports >&2
for d in *.deb; do dpkg-deb -x "$d" ../root; done
cd - >/dev/null
# Shared libraries the 10.0 binary needs that the system lacks.
missing=$(ldd "$dest.tmp/root/usr/bin/qemu-system-x86_64" | awk '/not found/{print $1}')
if [ -n "$missing" ]; then
	echo "qemu10: the 10.0 binary needs libraries this system lacks: $missing" >&2
	exit 1
fi
rm -rf "$dest" && mv "$dest.tmp" "$dest"

echo "$bin"
