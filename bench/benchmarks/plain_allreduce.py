"""A plain torchrun loop, the placement benchmark's yardstick: gloo, 1 MB all_reduce x N, median.

    torchrun --standalone --nproc-per-node 2 bench/benchmarks/plain_allreduce.py --pin after

Deliberately imports nothing from commbench, so it measures gloo and not the suite. It times
what the `collectives` workload times per step: one blocking `all_reduce` of a preallocated
float32 tensor of `--size-bytes`, bracketed by `perf_counter`, after `--warmup` untimed calls
and a barrier; the step's time is the max over ranks (all ranks' samples are gathered at the
end). `--pin before|after` pins each rank's thread to core `local_rank` before or after
`init_process_group` (gloo's threads are created inside it and inherit the mask); `none`
leaves it. Rank 0 prints one line: `plain_allreduce median_s=<s> pin=<policy> ...`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist


def _pin(local_rank: int, local_world: int) -> list[int] | None:
    cores = sorted(os.sched_getaffinity(0))
    per = len(cores) // local_world
    if per == 0:
        return None
    mine = cores[local_rank * per : (local_rank + 1) * per]
    os.sched_setaffinity(0, mine)
    return mine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pin", choices=("after", "before", "none"), default="after")
    p.add_argument("--size-bytes", type=int, default=1 << 20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--calls", type=int, default=50)
    args = p.parse_args()
    local_rank, local_world = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
    world = int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local_world))
    if args.pin == "before":
        _pin(local_rank, local_world)
    dist.init_process_group("gloo")
    if args.pin == "after":
        _pin(local_rank, local_world)
    x = torch.ones(args.size_bytes // 4, dtype=torch.float32)
    for _ in range(args.warmup):
        dist.all_reduce(x)
    dist.barrier()
    times = []
    for _ in range(args.calls):
        t0 = time.perf_counter()
        dist.all_reduce(x)
        times.append(time.perf_counter() - t0)
    mine = torch.tensor(times, dtype=torch.float64)
    every = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)
    if dist.get_rank() == 0:
        per_step = torch.stack(every).max(dim=0).values.tolist()
        print(f"plain_allreduce median_s={statistics.median(per_step):.9f} pin={args.pin} calls={args.calls}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
