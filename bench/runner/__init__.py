"""Suites, trials and the sweep that runs them."""
