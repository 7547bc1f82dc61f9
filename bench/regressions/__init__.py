"""Regression tracking over time: nightly runs into a results history, and same-job A/B of two git revisions."""
