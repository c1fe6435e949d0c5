"""nixwarden: least-privilege remote building and deployment for Nix and Lix."""

__version__ = "0.1.0"
