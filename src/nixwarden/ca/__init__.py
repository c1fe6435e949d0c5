"""Certified Nix signing keys: OpenSSH certificates from a team CA, and revocation lists.

A person's Nix key is certified as an OpenSSH user certificate (`cert.py`) by an
Ed25519 CA key (`sshkey.py`), for a validity window (`validity.py`) and a set of
principals (scopes); revocation lists are OpenSSH KRLs (`krl.py`). `policy.py` turns
CA keys, certificates and KRLs into a verification policy for store paths
(`options.py` builds it from the command line or the `[trust]` table); `ledger.py`
records issued serials; `cli.py` is `nixwarden ca …`.
"""
