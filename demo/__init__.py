"""make demo: a throwaway builder on loopback, and each landed part in turn."""
