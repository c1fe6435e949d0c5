"""Audit (seed 003): a machine's Nix, SSH and nixwarden trust settings, checked."""
