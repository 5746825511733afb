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

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"
}

release=$(uname -r)
arch=$(dpkg --print-architecture)
packages="python3-bpfcc python3-venv iproute2 iputils-ping ethtool tcpdump groff-base man-db systemd bpftool tmux"

missing=""
for p in $packages; do
	installed "$p" || missing="$missing $p"
done
need_headers=""
[ -d "/lib/modules/$release/build" ] || need_headers=yes

if [ -n "$missing" ] || [ -n "$need_headers" ]; then
	as_root "install${missing:- kernel headers}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	if [ -n "$need_headers" ]; then
		# A stock distro kernel has its own headers package; a custom one gets the
		# distro's generic headers plus a link (XDP code uses only UAPI headers).
		if apt-cache show "linux-headers-$release" >/dev/null 2>&1; then
			headers="linux-headers-$release"
		else
			headers="linux-headers-$arch"
		fi
		installed "$headers" || missing="$missing $headers"
	fi
	if [ -n "$missing" ]; then
		say "installing$missing"
		apt-get install -y -qq --no-install-recommends $missing >/dev/null
	fi
fi

if [ ! -d "/lib/modules/$release/build" ]; then
	build=$(ls -d /usr/src/linux-headers-*-"$arch" 2>/dev/null | sort -V | tail -n 1)
	if [ -z "$build" ]; then
		say "no kernel headers under /usr/src; install the headers of kernel $release" >&2
		exit 1
	fi
	as_root "link kernel headers"
	say "linking /lib/modules/$release/build -> $build (this kernel has no headers package)"
	mkdir -p "/lib/modules/$release"
	ln -sfn "$build" "/lib/modules/$release/build"
	common="${build%-"$arch"}-common"
	if [ -d "$common" ]; then
		ln -sfn "$common" "/lib/modules/$release/source"
	fi
fi

if ! grep -q ' /sys/fs/bpf bpf ' /proc/self/mounts; then
	as_root "mount bpffs"
	say "mounting bpffs on /sys/fs/bpf"
	mount -t bpf bpf /sys/fs/bpf
fi
