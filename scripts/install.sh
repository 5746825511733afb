#!/bin/sh
# make install: xdpfwd under PREFIX, as a system tool. A virtual environment of its own
# (it must see the distribution's BCC), the command in PREFIX/bin, the man page, the
# shell completions and the systemd units where man, the shells and systemd look.
set -eu
prefix=${1:?usage: install.sh PREFIX}
src=$(cd "$(dirname "$0")/.." && pwd)
libdir="$prefix/lib/xdpfwd"
bindir="$prefix/bin"

say() { printf 'install: %s\n' "$*"; }

say "xdpfwd into $libdir/venv"
mkdir -p "$libdir" "$bindir"
[ -x "$libdir/venv/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$libdir/venv"
"$libdir/venv/bin/pip" install -q --upgrade "$src" > "$libdir/pip.log" 2>&1 || {
	cat "$libdir/pip.log"
	exit 1
}
ln -sfn "$libdir/venv/bin/xdpfwd" "$bindir/xdpfwd"

say "man page, completions, systemd units under $prefix/share and $prefix/lib/systemd"
install -D -m 644 "$src/man/xdpfwd.8" "$prefix/share/man/man8/xdpfwd.8"
complete() {
	_XDPFWD_COMPLETE="$1" "$bindir/xdpfwd" > "$2.tmp"
	install -D -m 644 "$2.tmp" "$2"
	rm -f "$2.tmp"
}
mkdir -p "$prefix/share/bash-completion/completions" "$prefix/share/zsh/site-functions" \
	"$prefix/share/fish/vendor_completions.d"
complete bash_source "$prefix/share/bash-completion/completions/xdpfwd"
complete zsh_source "$prefix/share/zsh/site-functions/_xdpfwd"
complete fish_source "$prefix/share/fish/vendor_completions.d/xdpfwd.fish"
unitdir="$prefix/lib/systemd/system"
mkdir -p "$unitdir"
for name in xdpfwd xdpfwd-follow; do
	unit="$unitdir/$name.service"
	sed "s|@BINDIR@|$bindir|g" "$src/contrib/$name.service.in" > "$unit"
	if grep -q '@BINDIR@' "$unit"; then
		say "$unit still names @BINDIR@" >&2
		exit 1
	fi
done
say "done: $bindir/xdpfwd; run \`systemctl daemon-reload\` to see the units"
