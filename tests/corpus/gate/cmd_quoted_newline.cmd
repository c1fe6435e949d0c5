nix-daemon --stdio --store 'local
touch M'