"""The function every rank runs: set up the process group, run the workload, return its result as a dict.

Across nodes, each node's launcher only receives its own ranks' dicts, so every rank sends
its dict to global rank 0 (`gather_object`, before the process group goes) and the node
that holds rank 0 gets them all (`bench.distributed.launch.GATHERED`).
"""

from __future__ import annotations

import importlib
import os
import traceback
from typing import Any

from torch.distributed.elastic.multiprocessing.errors import record

from bench.contracts import RankResult, RankSkipped, TrialConfig
from bench.distributed.env import gather_to_rank0, init_rank, placement, shutdown
from bench.errors import SkipTrial
from bench.meters import phases


@record
def rank_main(payload: dict[str, Any]) -> dict[str, Any]:
    """Entry point spawned by the launcher on each rank (must stay importable by path)."""
    phases.reset(phases.process_start())
    cfg = TrialConfig.from_dict(payload)
    for module in cfg.plugins:
        importlib.import_module(module)
    from bench.strategies import parse
    from bench.workloads import WORKLOADS

    phases.mark("rendezvous")
    env = init_rank(cfg.device, cfg.threads_per_rank, flight_recorder=cfg.track_comm, pin=cfg.pin)
    phases.mark("build")
    try:
        comp = parse(cfg.strategy)
        run = WORKLOADS.get(cfg.workload).run
        try:
            result: RankResult | RankSkipped = run(cfg, comp, env)
            if isinstance(result, RankResult):
                result.placement = placement(env)  # after the run: every thread it started exists
        except SkipTrial as skip:
            # Skip decisions are deterministic, so every rank reaches the same one.
            result = RankSkipped(rank=env.rank, reason=skip.reason)
        if isinstance(result, RankResult):
            result.timeline = phases.timeline()
        out = result.to_dict()  # the process boundary: plain data only
        if int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size)) < env.world_size:
            return gather_to_rank0(out, env.rank, env.world_size)
        return out
    except Exception:
        # Keep torchelastic's error file as the channel (it carries the traceback), but
        # make sure the text names the rank even when the error file cannot be written.
        traceback.print_exc()
        raise
    finally:
        shutdown()
