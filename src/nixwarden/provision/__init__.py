"""Provisioning: a builder, its principals and its clients, one command each, crash-safe.

Planners (builder_plan, client_plan) are pure: from what `observe` read of the machine
they return the steps (steps.py, frozen dataclasses) that make it match what was asked,
in an order where no SSH login is possible before everything else is in place.
`execute` is the one place that changes anything, a step at a time, each step checked
first and skipped when already done, every file written whole.
"""
