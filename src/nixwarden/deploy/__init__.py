"""Verified deploy without root: the wire protocol, the client (`push`), the receive side."""
