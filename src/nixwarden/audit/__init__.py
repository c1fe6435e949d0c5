"""Audit: a machine's Nix, SSH and nixwarden trust settings, checked."""
