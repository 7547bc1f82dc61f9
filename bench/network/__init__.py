"""Emulated networks: named link specs, Linux network namespaces joined by a veth pair, and the link's counters."""
