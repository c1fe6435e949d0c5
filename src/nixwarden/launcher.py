"""The `nixwarden` command's launcher, written for one virtual environment.

pip installs `bin/nixwarden` with the shebang `#!<venv>/bin/python3`, which runs `site`:
the .pth files, Debian's sitecustomize with its apport hook, setuptools' distutils shim.
That is about 6 ms on every command, a third of a cached `confine run`. So
`make deps` and `scripts/install.sh` replace it with a launcher written here:

- it starts the interpreter `-IS`: isolated (no PYTHON* variable, no user site-packages,
  no working directory on the path) and without `site`;
- it puts on sys.path what `site` adds in that environment (its site-packages, and the
  directories its .pth files name, such as an editable install's source). That is asked of
  the interpreter itself, with and without `site`, when the launcher is written. The
  `import` lines of .pth files are not run.

The launcher is a handful of lines because a script is compiled on every start, unlike
a module: working the paths out at each start cost 1.2 million instructions, more than
checking a cached plan. Run as `<venv>/bin/python3 -I -m nixwarden.launcher TARGET` after
each `pip install`. `bootstrap.sh --check` says when the launcher is not a lean one.
"""

import json
import sys

from nixwarden import files, process
from nixwarden.errors import UsageError

_PATHS = "import json, sys; print(json.dumps([sys.prefix, sys.path]))"
MARKER = "# nixwarden's lean launcher"


def text(python: str, prefix: str, paths: list[str]) -> str:
    """The launcher for `python` (absolute): `prefix` and `paths` are what `site` sets."""
    return (
        f"#!{python} -IS\n"
        f"{MARKER}, written by `python3 -m nixwarden.launcher` for {prefix}\n"
        "# (see src/nixwarden/launcher.py): no `site`; its paths, found once, are here.\n"
        "import sys\n"
        f"sys.prefix = sys.exec_prefix = {prefix!r}\n"
        f"sys.path += {paths!r}\n"
        "from nixwarden.cli import main\n"
        "sys.exit(main())\n"
    )


def site_paths(python: str) -> tuple[str, list[str]]:
    """(sys.prefix, the sys.path entries) that `site` adds for `python`, in `site`'s order."""

    def ask(flags: str) -> tuple[str, list[str]]:
        result = process.run([python, flags, "-c", _PATHS], env={}, check=True)
        prefix, path = json.loads(result.stdout)
        return str(prefix), [str(entry) for entry in path]

    prefix, with_site = ask("-I")
    _, without_site = ask("-IS")
    return prefix, [entry for entry in with_site if entry not in without_site]


def write(target: str, python: str) -> None:
    """Replace `target` with the launcher for `python`, in one rename."""
    if not python.startswith("/"):
        raise UsageError(f"nixwarden.launcher: {python!r} is not an absolute path")
    prefix, paths = site_paths(python)
    # 0755: a program everyone runs, root's to change.
    files.write_atomic(target, text(python, prefix, paths).encode(), mode=0o755, replace=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].startswith("/"):
        print(
            "usage: python3 -I -m nixwarden.launcher /ABSOLUTE/PATH/bin/nixwarden", file=sys.stderr
        )
        return 2
    # The interpreter of the environment the launcher is for: the one running this.
    write(argv[0], sys.executable)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
