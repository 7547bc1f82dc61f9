"""Suite files for multi-rank tests: one tiny gpt2 train step a trial, the cheapest trial with an ok row."""

from __future__ import annotations

import json
from collections.abc import Sequence

# One untimed-nothing, one-step gpt2-tiny trial: no warmup, no evaluation, no profiler pass.
ONE_STEP = {"steps": 1, "warmup_steps": 0, "batch_size": 2, "seq_len": 16, "eval_batches": 0, "profile_steps": 0}


def one_step_suite(
    name: str,
    strategies: Sequence[str],
    *,
    world_sizes: Sequence[int] = (2,),
    plugins: Sequence[str] = (),
    workloads: Sequence[str] | None = None,
    extra: str = "",
    **settings: float,
) -> str:
    """The TOML of a suite over `strategies` with `ONE_STEP` settings (`settings` override
    them); `extra` is appended verbatim (e.g. `[[override]]` tables)."""
    lines = [f"name = {json.dumps(name)}"]
    if plugins:
        lines.append(f"plugins = {json.dumps(list(plugins))}")
    lines += ["[matrix]", f"strategies = {json.dumps(list(strategies))}", 'models = ["gpt2-tiny"]']
    if workloads:
        lines.append(f"workloads = {json.dumps(list(workloads))}")
    lines += [f"world_sizes = {json.dumps(list(world_sizes))}", "[settings]"]
    lines += [f"{k} = {v}" for k, v in {**ONE_STEP, **settings}.items()]
    return "\n".join(lines) + "\n" + extra
