"""Accuracy measures: convergence, fidelity, perplexity."""
