#!/usr/bin/env bash
# Installs what nixwarden's demo and tests need, and nothing that is already there.
# Idempotent: safe to run before every `make demo` / `make test`.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv="$here/.venv"
# Debian's interpreter, not a per-user one: the gate runs as unprivileged SSH users,
# who must be able to execute it (a pyenv under /root is not reachable for them).
python=/usr/bin/python3

apt_packages=(nix-bin openssh-server openssh-client bubblewrap busybox-static python3-venv
              hyperfine systemd procps iproute2 acl)
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "bootstrap: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    echo "bootstrap: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp="$venv/.lock-stamp"
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
if [[ ! -f "$stamp" ]] || ! cmp -s "$here/requirements.lock" "$stamp"; then
    echo "bootstrap: installing Python dependencies from requirements.lock" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check --require-hashes -r "$here/requirements.lock"
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -e "$here"
    cp "$here/requirements.lock" "$stamp"
fi
