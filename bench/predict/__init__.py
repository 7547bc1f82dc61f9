"""Predicted step time and memory beyond the measured trials: pure numbers in, numbers out (no torch).

`collectives` (alpha-beta time of each collective, ring/tree/gloo), `calibrate` (alpha, beta
fitted from `collectives`-workload rows), `step` (compute + collectives + codec - overlap),
`links` (published link figures), `shapes` and `memory` (parameter shapes and model state per
rank), `holdout` (leave-links-out validation), `advise` (rank layouts and techniques for a
cluster). Only `rows` reads results (pandas); nothing here imports torch.
"""
