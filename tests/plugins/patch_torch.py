"""A test-only strategy that monkeypatches torch inside the ranks, to show the patch dies with its trial."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.strategies import STRATEGIES
from bench.strategies.base import Aspect, Strategy, TrialState
from bench.strategies.metrics import Metric

MARK = "_commbench_patched_by"

if "patch_torch" not in STRATEGIES:

    @STRATEGIES.register("patch_torch")
    class PatchTorch(Strategy):
        name = "patch_torch"
        summary = "test only: records whether torch is already patched, then patches it (gelu and a module attribute)"
        aspect = Aspect.MODEL
        metrics = tuple(Metric(n, str, doc="the trial id of a patch found then") for n in
                        ("torch_patched_before", "gelu_patched_before", "torch_patched_after"))  # fmt: skip

        def apply(self, state: TrialState) -> None:
            # What an earlier trial's patch would have left behind, if ranks or the modules
            # they forked from outlived that trial.
            state.metrics["torch_patched_before"] = getattr(torch, MARK, None)
            state.metrics["gelu_patched_before"] = getattr(F.gelu, MARK, None)
            gelu = F.gelu

            def patched(*args, **kwargs):  # type: ignore[no-untyped-def]
                return gelu(*args, **kwargs)

            setattr(patched, MARK, state.cfg.trial_id)
            F.gelu = patched
            setattr(torch, MARK, state.cfg.trial_id)
            state.metrics["torch_patched_after"] = getattr(torch, MARK, None)
