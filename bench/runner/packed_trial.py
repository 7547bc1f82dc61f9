"""One trial of a packing wave in its own process: `python -m bench.runner.packed_trial DIR`.

`launch` sets process-wide state (environment variables, SIGALRM for the timeout), so two
trials of a wave cannot share a process: `bench.runner.executors.PackingExecutor` starts one
of these per trial, with `COMMBENCH_CPUSET` (and `CUDA_VISIBLE_DEVICES`) set to its slot.
DIR holds `job.pkl` (what to run); the child gets ready (imports, its fork server), touches
`ready`, waits for the executor's `go` (so a wave's trials start together, not staggered by
their start-up), runs `run_trial`, and writes its (row, per-collective rows) to `rows.pkl`.
"""

from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path

from bench.distributed import forkserver
from bench.runner.trial import run_trial

POLL_S = 0.02


def main(folder: Path) -> None:
    job = pickle.loads((folder / "job.pkl").read_bytes())
    if job["launch"].get("launch_method", forkserver.DEFAULT_START_METHOD) == "forkserver":
        forkserver.ensure_started()  # its preload is start-up, not part of the trial
    (folder / "ready").touch()
    while not (folder / "go").exists():  # the executor kills this process if it gives up on the wave
        time.sleep(POLL_S)
    rows = run_trial(job["config"], job["run_id"], job["params"], job["log_dir"], **job["launch"],
                     packed_with=job["packed_with"])  # fmt: skip
    tmp = folder / "rows.pkl.tmp"
    tmp.write_bytes(pickle.dumps(rows))
    tmp.replace(folder / "rows.pkl")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
