#!/usr/bin/env bash
# `make install`: nixwarden at a fixed prefix that every gate user can execute.
#
# The gate runs as each gate user on every SSH connection, so its interpreter and code
# must be readable and executable by all of them and writable by root alone: a virtual
# environment made with Debian's /usr/bin/python3 under PREFIX (default /opt/nixwarden),
# the hash-pinned runtime dependencies (requirements-runtime.lock), nixwarden itself, and
# `nixwarden` linked into BINDIR (default /usr/local/bin). Run again to upgrade in place.
#
#   scripts/install.sh [PREFIX [BINDIR]]
set -euo pipefail

prefix=${1:-/opt/nixwarden}
bindir=${2:-/usr/local/bin}
here=$(cd "$(dirname "$0")/.." && pwd)
python=/usr/bin/python3

if [[ $(id -u) -ne 0 ]]; then
    echo "install: run as root (the install must be root's, for every gate user)" >&2
    exit 1
fi
case $prefix in
    /*) ;;
    *) echo "install: PREFIX must be an absolute path" >&2; exit 2 ;;
esac
umask 022

if [[ ! -x $prefix/bin/python3 ]]; then
    "$python" -m venv "$prefix"
fi
pip=("$prefix/bin/pip" install -q --disable-pip-version-check)
"${pip[@]}" --require-hashes -r "$here/requirements-runtime.lock"

# Build from a copy, so the checkout gets no build/ or *.egg-info of a non-editable install.
source=$(mktemp -d)
trap 'rm -rf "$source"' EXIT
cp -r "$here/pyproject.toml" "$here/README.md" "$here/src" "$here/bin" "$source/"
"${pip[@]}" --no-deps --force-reinstall "$source"

# pip's launcher runs `site` on every command (about 6 ms); the lean one starts `-IS` and
# has the paths `site` would add written into it (src/nixwarden/launcher.py).
"$prefix/bin/python3" -I -m nixwarden.launcher "$prefix/bin/nixwarden"

install -d -m 0755 "$bindir"
ln -sfn "$prefix/bin/nixwarden" "$bindir/nixwarden"
echo "install: nixwarden $("$prefix/bin/nixwarden" --version | cut -d' ' -f2) in $prefix;" \
     "$bindir/nixwarden -> $prefix/bin/nixwarden"
echo "install: key lines run $prefix/bin/python3 -I $prefix/bin/nixwarden-gate"
