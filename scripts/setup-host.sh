#!/bin/sh
# Host prerequisites for xdpfwd on Debian/Ubuntu; safe to run again (it only does what is
# missing). Needs root only when something has to be installed or mounted.
set -eu

say() { printf 'setup: %s\n' "$*"; }

as_root() {
	if [ "$(id -u)" -ne 0 ]; then
		say "need root to $1; rerun as root (sudo make ...)" >&2
		exit 1
	fi
}

release=$(uname -r)
arch=$(dpkg --print-architecture)
packages="python3-bpfcc python3-venv iproute2 iputils-ping ethtool tcpdump groff-base"

headers_pkg=""
if [ ! -d "/lib/modules/$release/build" ]; then
	# A stock distro kernel has its own headers package; a custom one gets the
	# distro's generic headers plus a link (XDP code uses only UAPI headers).
	if apt-cache show "linux-headers-$release" >/dev/null 2>&1; then
		headers_pkg="linux-headers-$release"
	else
		headers_pkg="linux-headers-$arch"
	fi
fi

missing=""
for p in $packages $headers_pkg; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	as_root "install$missing"
	say "installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -d "/lib/modules/$release/build" ]; then
	build=$(ls -d /usr/src/linux-headers-*-"$arch" 2>/dev/null | sort -V | tail -n 1)
	if [ -z "$build" ]; then
		say "no kernel headers found under /usr/src after installing $headers_pkg" >&2
		exit 1
	fi
	common="${build%-"$arch"}-common"
	as_root "link kernel headers"
	say "linking /lib/modules/$release/build -> $build (running kernel has no headers package)"
	mkdir -p "/lib/modules/$release"
	ln -sfn "$build" "/lib/modules/$release/build"
	[ -d "$common" ] && ln -sfn "$common" "/lib/modules/$release/source"
fi

if ! grep -q ' /sys/fs/bpf bpf ' /proc/self/mounts; then
	as_root "mount bpffs"
	say "mounting bpffs on /sys/fs/bpf"
	mount -t bpf bpf /sys/fs/bpf
fi
