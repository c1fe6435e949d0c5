"""Trust core tour: NAR hashes like Nix's, keys, signatures, and a cache Nix accepts."""

from __future__ import annotations

import secrets

from demo.framework import Demo

TITLE = "Trust core: Nix's formats, exact and strict"


def run(demo: Demo) -> None:
    conf = demo.scratch / "nix-conf"
    conf.mkdir()
    (conf / "nix.conf").write_text(
        "experimental-features = nix-command\nsandbox = false\nsubstituters =\n"
    )
    env = demo.env | {"NIX_CONF_DIR": str(conf)}
    tag = secrets.token_hex(3)
    made: list[str] = []
    try:
        _tour(demo, env, tag, made)
    finally:
        if made:
            demo.step(
                "remove the demo's store paths",
                ["nix-store", "--delete", *made],
                env=env,
                show_lines=1,
            )


def _tour(demo: Demo, env: dict[str, str], tag: str, made: list[str]) -> None:
    demo.section("NAR hashes, byte for byte as Nix computes them")
    tree = demo.scratch / f"nwt-demo-tree-{tag}"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "hello").write_text("#!/bin/sh\necho hello\n")
    (tree / "bin" / "hello").chmod(0o755)
    (tree / "README").write_text("a small tree\n")
    (tree / "latest").symlink_to("bin/hello")
    added = demo.step("add a small tree to the store", ["nix-store", "--add", str(tree)], env=env)
    path = added.stdout.decode().strip()
    made.append(path)
    demo.nixwarden("nixwarden computes the NAR hash itself", "nar", "hash", path, env=env)
    demo.step("…and Nix recorded the same", ["nix-store", "-q", "--hash", path], env=env)

    demo.section("Keys and signatures")
    built = demo.step(
        "build a path (input-addressed: only a signature can vouch for it elsewhere)",
        [
            "nix-build",
            "--no-out-link",
            "-E",
            f'derivation {{ name = "nwt-demo-{tag}"; system = builtins.currentSystem; '
            'builder = "/bin/sh"; args = [ "-c" "echo built > $out" ]; }',
        ],
        env=env,
    )
    target = built.stdout.decode().strip()
    made.append(target)
    deriver = demo.step(
        "its deriver (recorded in narinfos, but not covered by any signature)",
        ["nix-store", "-q", "--deriver", target],
        env=env,
    )
    made.append(deriver.stdout.decode().strip())
    secret, public = demo.scratch / "demo.sec", demo.scratch / "demo.pub"
    demo.nixwarden(
        "generate a signing key (secret file mode 0600, never overwritten)",
        *("key", "generate", "--name", f"demo-{tag}-1"),
        *("--secret", str(secret), "--public", str(public)),
        env=env,
    )
    demo.nixwarden(
        "built here but unsigned: verification refuses it (being local does not count)",
        *("verify", "--trusted-key", str(public), target),
        expect_exit=1,
        env=env,
    )
    demo.nixwarden("sign it: prints PATH SIGNATURE", "sign", "--key", str(secret), target, env=env)
    demo.step(
        "Nix adds a signature with our key file",
        ["nix", "store", "sign", "--key-file", str(secret), target],
        env=env,
    )
    demo.nixwarden(
        "now it verifies, contents included",
        *("verify", "--check-contents", "--trusted-key", str(public), target),
        env=env,
    )
    stranger_secret, stranger = demo.scratch / "stranger.sec", demo.scratch / "stranger.pub"
    demo.nixwarden(
        "a key nobody signed with",
        *("key", "generate", "--name", "stranger-1"),
        *("--secret", str(stranger_secret), "--public", str(stranger)),
        env=env,
    )
    demo.nixwarden(
        "trusting only that key, the path is refused",
        *("verify", "--trusted-key", str(stranger), target),
        expect_exit=1,
        env=env,
    )

    demo.section("A signed file:// binary cache that real Nix accepts")
    cache = demo.scratch / "cache"
    demo.nixwarden(
        "export the closure as a signed, xz-compressed cache",
        *("cache", "export", "--key", str(secret), "--to", str(cache), target),
        env=env,
    )
    narinfo = next(cache.glob("*.narinfo"))
    demo.step("one narinfo", ["cat", str(narinfo)], env=env)
    for label, key_file, expect in (("trusting", public, 0), ("not trusting", stranger, 1)):
        conf = demo.scratch / f"conf-{label.replace(' ', '-')}"
        conf.mkdir()
        (conf / "nix.conf").write_text(
            "experimental-features = nix-command\nsubstituters =\nrequire-sigs = true\n"
            f"trusted-public-keys = {key_file.read_text().strip()}\n"
        )
        demo.step(
            f"nix copy into a separate store {label} our key",
            [
                *("nix", "copy", "--from", f"file://{cache}"),
                *("--to", str(demo.scratch / f"store-{expect}"), target),
            ],
            env=demo.env | {"NIX_CONF_DIR": str(conf)},
            expect_exit=expect,
        )
