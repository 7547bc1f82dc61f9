"""The infer workload measures the compressed model alone: the reference runs first, once, from a verified disk cache."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.contracts import RankResult, TrialConfig
from bench.distributed.env import RankEnv
from bench.eval import reference
from bench.strategies import parse
from bench.workloads import infer
from tests.plain import held_out_by_hand

STRATEGY = "prune_l1(amount=0.5)"  # visibly changes a random-init model's logits (fp16 casts barely do)
ENV = RankEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="gloo")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COMMBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


class Spy:
    """Records every model the workload loads, and which of them are alive when the window opens."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.loaded: list[weakref.ref[Any]] = []
        self.alive_at_start: list[bool] = []
        load, spy = infer.load_model, self

        def load_model(*args: Any) -> Any:
            model, tokenizer = load(*args)
            spy.loaded.append(weakref.ref(model))
            return model, tokenizer

        class Window(infer.Window):
            def start(self) -> None:
                super().start()
                spy.alive_at_start = [ref() is not None for ref in spy.loaded]

        monkeypatch.setattr(infer, "load_model", load_model)
        monkeypatch.setattr(infer, "Window", Window)


def config(strategy: str) -> TrialConfig:
    return TrialConfig(
        suite="t", strategy=strategy, model="gpt2-tiny", workload="infer", steps=1, warmup_steps=0, batch_size=2,
        seq_len=16, eval_batches=2, gen_tokens=0, profile_steps=0, track_comm=False,
    )  # fmt: skip


def run(strategy: str) -> RankResult:
    return infer.run(config(strategy), parse(strategy), ENV)


def test_the_reference_is_freed_before_the_window_and_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    cold = run(STRATEGY)
    # Cold cache: the candidate is loaded, then a reference copy, which is gone when the window opens.
    assert len(spy.loaded) == 2 and spy.alive_at_start == [True, False]
    assert cold.metrics["reference_cache"] == "computed"
    plain = held_out_by_hand(config(STRATEGY))
    assert plain["kl_mean"] > 1e-3 and cold.accuracy.kl_mean == pytest.approx(plain["kl_mean"], rel=1e-4)
    assert cold.accuracy.top1_agreement == plain["top1_agreement"]
    assert cold.accuracy.eval_loss == pytest.approx(plain["eval_loss"], rel=1e-6)
    spy.loaded.clear()
    warm = run(STRATEGY)
    assert len(spy.loaded) == 1 and warm.metrics["reference_cache"] == "hit"  # the reference never ran
    assert warm.accuracy == cold.accuracy


def test_baseline_is_its_own_reference_exactly() -> None:
    acc = run("baseline").accuracy
    assert acc.kl_mean == 0.0 and acc.top1_agreement == 1.0
    assert acc.protocol is not None and acc.protocol["tokens_scored"] == 2 * 2 * 16
    assert acc.protocol["reference"]["weights_source"] == "random init of the gpt2-tiny config, seed 0"


def _entry() -> Path:
    (path,) = (Path(p) for p in reference.cache.path("reference").glob("*.pt"))
    return path


def _damaged(data: bytes, damage: str) -> bytes:
    if damage == "truncate":
        return data[: len(data) // 2]
    if damage == "flip":  # inside the tensors: the file still loads, the digest does not match
        return data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1 :]
    return b"not a torch file"


def test_a_corrupt_cache_entry_is_recomputed_not_trusted() -> None:
    calls: list[int] = []

    def compute() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"logits.0": torch.arange(1 << 16, dtype=torch.float32), "nll_sum": torch.tensor(3.5, dtype=torch.float64)}

    key = {"task": "t", "ids_sha256": "0" * 64}
    first = reference.ensure(key, ENV.device, compute)
    assert first.status == "computed" and reference.ensure(key, ENV.device, compute).status == "hit" and len(calls) == 1
    for damage, why in [("truncate", "unreadable"), ("flip", "digest mismatch"), ("garbage", "unreadable")]:
        first.path.write_bytes(_damaged(first.path.read_bytes(), damage))
        again = reference.ensure(key, ENV.device, compute)
        assert again.status.startswith(f"recomputed: {why}"), damage
        assert torch.equal(reference.load(again)["logits.0"], compute()["logits.0"])
    assert reference.check(first.path, "another key") == "key mismatch"
    assert reference.ensure(key, ENV.device, compute).status == "hit"  # the rewritten entry is whole


def test_infer_recomputes_a_damaged_reference_and_scores_the_same() -> None:
    first = run(STRATEGY)
    path = _entry()
    path.write_bytes(_damaged(path.read_bytes(), "flip"))
    again = run(STRATEGY)
    assert again.metrics["reference_cache"] == "recomputed: digest mismatch"
    assert again.accuracy == first.accuracy
