"""Workloads: what a trial does on each rank (train, infer, transfer), returning a plain dict."""
