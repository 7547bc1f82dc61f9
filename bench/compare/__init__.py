"""Regression comparison of stored runs: two runs side by side (regression.py) or a history of runs (history.py)."""
