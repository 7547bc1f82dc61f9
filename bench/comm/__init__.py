"""Bytes communicated, three ways: logical (per collective), wire (kernel counters), analytic."""
