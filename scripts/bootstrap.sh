#!/usr/bin/env bash
# Installs what nixwarden's demo and tests need, and creates the system state they rely
# on, creating only what is missing. Idempotent: safe before every `make demo`/`make test`.
#
# Every piece of machine state the demo and the system tests use is listed here, in
# SYSTEM STATE below; tests/unit/test_bootstrap_manifest.py checks that the harness
# uses nothing else, so a leftover of earlier work can never make them pass.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv="$here/.venv"
# Debian's interpreter, not a per-user one: the gate runs as unprivileged SSH users,
# who must be able to execute it (a pyenv under /root is not reachable for them).
python=/usr/bin/python3

# PACKAGES. nix-setup-systemd is only a Recommends of nix-bin, so --no-install-recommends
# leaves it out: it is the package that creates nix-users and the daemon's socket directory.
apt_packages=(nix-bin nix-setup-systemd openssh-server openssh-client bubblewrap busybox-static
              python3-venv hyperfine systemd procps iproute2 acl passwd util-linux)
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

# SYSTEM STATE. What Debian's packages normally create, stated here and created when
# missing (a purged nix-setup-systemd, a container without systemd-tmpfiles having run).
if [[ $(id -u) -eq 0 ]]; then
    # group: nix-users   (Debian lets only this group reach the daemon socket)
    # group: nixbld      (the daemon's build users)
    # group: nixwarden-trusted   (the test daemon's trusted-users)
    # group: nixwarden-log       (gate users that may append to the shared audit log)
    for group in nix-users nixbld nixwarden-trusted nixwarden-log; do
        getent group "$group" >/dev/null || groupadd --system "$group"
    done
    # user: nixbld1 … nixbld10
    nologin=$(command -v nologin || echo /usr/sbin/nologin)
    for n in $(seq 1 10); do
        id "nixbld$n" >/dev/null 2>&1 || useradd --system --comment "Nix build user $n" \
            --home-dir /var/empty --gid nixbld --groups nixbld --no-user-group \
            --shell "$nologin" "nixbld$n"
    done
    # directory: /nix/var/nix/daemon-socket 0770 root:nix-users
    install -d -m 0770 -o root -g nix-users /nix/var/nix/daemon-socket
    # directory: /nix/var/nix/gcroots/per-user 1777
    # directory: /nix/var/nix/profiles/per-user 1777
    install -d -m 1777 /nix/var/nix/gcroots/per-user /nix/var/nix/profiles/per-user
    # directory: /run/sshd 0755   (sshd's privilege-separation directory)
    install -d -m 0755 /run/sshd
    # daemon: nix-daemon — started by the harness (testbed/harness.py) on the default
    # socket with its own nix.conf, not by systemd: containers and CI have no systemd.
fi

stamp="$venv/.lock-stamp"
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
# pyproject.toml too: it names the launchers pip installs into the venv's bin/.
if [[ ! -f "$stamp" ]] || ! cat "$here/requirements.lock" "$here/pyproject.toml" | cmp -s - "$stamp"; then
    echo "bootstrap: installing Python dependencies from requirements.lock" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check --require-hashes -r "$here/requirements.lock"
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -e "$here"
    cat "$here/requirements.lock" "$here/pyproject.toml" > "$stamp"
fi
