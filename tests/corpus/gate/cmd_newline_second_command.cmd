nix-daemon --stdio
touch M