"""make stability's trial-by-trial comparison of two sweeps, on synthetic rows."""

from __future__ import annotations

import pandas as pd

from bench.benchmarks.stability import compare_sweeps


def _row(tid: str, p50: float, half: float, met: bool | None, noisy: bool = False) -> dict:
    return {"trial_id": tid, "suite": "s", "strategy": tid, "model": "m", "world_size": 2, "network": None,
            "status": "ok", "latency_p50_s": p50, "latency_p50_s_ci_low": p50 * (1 - half),
            "latency_p50_s_ci_high": p50 * (1 + half), "launches": 3, "noisy": noisy,
            "repeat_target_met": met, "repeat_stop": "target" if met else "max seconds"}  # fmt: skip


def test_tally_counts_agreement_overlap_and_whether_each_miss_is_flagged() -> None:
    a = pd.DataFrame([_row("same", 0.100, 0.02, True), _row("moved", 0.100, 0.02, True),
                      _row("noisy", 0.100, 0.10, False), _row("loud", 0.100, 0.02, True, noisy=True)])  # fmt: skip
    b = pd.DataFrame([_row("same", 0.103, 0.02, True), _row("moved", 0.120, 0.02, True),
                      _row("noisy", 0.115, 0.10, False), _row("loud", 0.100, 0.02, True)])  # fmt: skip
    lines, t = compare_sweeps(a, b)
    by = {line["trial"].split()[0]: line for line in lines}
    assert (t.trials, t.within, t.overlap) == (4, 2, 3)
    # "moved" is 20% off with tight, separated CIs and no flag: the one unflagged miss.
    assert (t.flagged_misses, t.unflagged_misses, t.ok) == (1, 1, 3)
    assert by["moved"]["noise"] == "NOT FLAGGED" and by["moved"]["CIs overlap"] == "NO"
    assert "missed its CI target" in by["noisy"]["noise"] and by["loud"]["noise"] == "sweep 1 noisy"
    assert t.flagged == 2 and "1 NOT flagged" in t.text()
