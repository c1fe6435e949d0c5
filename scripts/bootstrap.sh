#!/usr/bin/env bash
# Installs what nixwarden's demo and tests need, and creates the system state they rely
# on, creating only what is missing. Idempotent: safe before every `make demo`/`make test`.
#
# Every piece of machine state the demo and the system tests use is listed here, in
# PACKAGES and in the `# kind: …` manifest lines of SYSTEM STATE below; testbed/requirements.py
# declares what the testbed uses and tests/unit/test_bootstrap_manifest.py checks that
# each of those is listed here, so a leftover of earlier work can never make them pass.
#
#   scripts/bootstrap.sh           install and create what is missing
#   scripts/bootstrap.sh --check   change nothing; exit 1 naming each listed piece that
#                                  is missing or wrong (the harness runs this first)
set -euo pipefail

mode=ensure
case "${1:-}" in
    "") ;;
    --check) mode=check ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"

here=$(cd "$(dirname "$0")/.." && pwd)
venv="$here/.venv"
# What the venv is installed from: the locked dependencies, pyproject.toml (it names the
# launchers pip installs into the venv's bin/) and the launchers themselves.
stamped=("$here/requirements.lock" "$here/pyproject.toml" "$here/bin/nixwarden" "$here/bin/nixwarden-gate")
# Debian's interpreter, not a per-user one: the gate runs as unprivileged SSH users,
# who must be able to execute it (a pyenv under /root is not reachable for them).
python=/usr/bin/python3

# PACKAGES. nix-setup-systemd is only a Recommends of nix-bin, so --no-install-recommends
# leaves it out: it is the package that creates nix-users and the daemon's socket directory.
apt_packages=(nix-bin nix-setup-systemd openssh-server openssh-client bubblewrap busybox-static
              python3-venv systemd procps passwd util-linux coreutils time dpkg mount
              e2fsprogs)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# --check: read the manifest lines below and test each against the machine.
if [[ $mode == check ]]; then
    problems=()
    for pkg in "${apt_packages[@]}"; do
        installed "$pkg" || problems+=("package $pkg is not installed")
    done
    while read -r kind name arg1 arg2 _; do
        case $kind in
            group)
                getent group "$name" >/dev/null || problems+=("group $name does not exist") ;;
            user)
                # "nixbld1 … nixbld10" is a range; anything else one user.
                if [[ $arg1 == "…" && $name =~ ^(.*[^0-9])([0-9]+)$ ]]; then
                    prefix=${BASH_REMATCH[1]}
                    names=$(seq -f "$prefix%g" "${BASH_REMATCH[2]}" "${arg2#"$prefix"}")
                else
                    names=$name
                fi
                for user in $names; do
                    id "$user" >/dev/null 2>&1 || problems+=("user $user does not exist")
                done ;;
            directory)
                if [[ ! -d $name || -L $name ]]; then
                    problems+=("directory $name does not exist")
                    continue
                fi
                actual=$(stat -c %a "$name")
                ((8#$actual == 8#$arg1)) || problems+=("directory $name has mode $actual, not $arg1")
                if [[ $arg2 =~ ^[a-z_][a-z0-9_-]*:[a-z_][a-z0-9_-]*$ ]]; then
                    owner=$(stat -c %U:%G "$name")
                    [[ $owner == "$arg2" ]] || problems+=("directory $name is owned by $owner, not $arg2")
                fi ;;
            daemon)
                PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$name" >/dev/null \
                    || problems+=("daemon $name is not installed") ;;
        esac
    done < <(sed -nE 's/^[[:space:]]*# (group|user|directory|daemon): /\1 /p' "$self")
    if [[ ! -x "$venv/bin/nixwarden" ]] \
        || ! cat "${stamped[@]}" | cmp -s - "$venv/.lock-stamp"; then
        problems+=(".venv is not installed from requirements.lock, pyproject.toml and bin/")
    elif [[ $(head -n 1 "$venv/bin/nixwarden") != "#!$venv/bin/python3 -IS" ]] \
        || ! sed -n 2p "$venv/bin/nixwarden" | grep -q "^# nixwarden's lean launcher"; then
        problems+=("$venv/bin/nixwarden is not the lean launcher (python3 -IS, paths written in)")
    fi
    for problem in "${problems[@]}"; do
        echo "bootstrap --check: $problem (run make deps as root)" >&2
    done
    ((${#problems[@]} == 0))
    exit
fi

missing=()
for pkg in "${apt_packages[@]}"; do
    installed "$pkg" || missing+=("$pkg")
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
    # (Nix creates /nix/var/nix/{profiles,gcroots}/per-user itself, mode 0755, each time
    # it opens the store as root, and the daemon makes each client's directory in them.)
    # directory: /run/sshd 0755   (sshd's privilege-separation directory)
    install -d -m 0755 /run/sshd
    # daemon: nix-daemon — installed here (nix-bin), started by the harness
    # (testbed/harness.py) on the default socket with its own nix.conf, not by systemd:
    # containers and CI have no systemd.
fi

stamp="$venv/.lock-stamp"
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
if [[ ! -f "$stamp" ]] || ! cat "${stamped[@]}" | cmp -s - "$stamp"; then
    echo "bootstrap: installing Python dependencies from requirements.lock" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check --require-hashes -r "$here/requirements.lock"
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -e "$here"
    # pip's launcher runs `site` on every command; the lean one starts `-IS` and has the
    # paths `site` would add written into it (src/nixwarden/launcher.py).
    "$venv/bin/python3" -I -m nixwarden.launcher "$venv/bin/nixwarden"
    cat "${stamped[@]}" > "$stamp"
fi
