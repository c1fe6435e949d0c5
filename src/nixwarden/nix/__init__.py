"""Reading the local Nix store: paths, the database, closures."""
