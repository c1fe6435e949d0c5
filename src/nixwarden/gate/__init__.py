"""The SSH gate: an authorized_keys `command=` that lets a key speak only Nix's protocol.

`request` parses what the client asked for (pure), `policy` decides (pure),
`run` is the imperative shell that logs, counts sessions and execs.
"""
