"""Typed coercion of raw values into dataclass configs, with dotted error names."""

from __future__ import annotations

from typing import Literal

import pytest

from bench.config import coerce, flatten
from bench.contracts import DataConfig, TrialConfig
from bench.errors import BenchError


@pytest.mark.parametrize(
    ("value", "annotation", "expected"),
    [
        ("4", int, 4),
        (4.0, int, 4),
        ("0x10", int, 16),
        ("0.25", float, 0.25),
        ("TRUE", bool, True),
        ("off", bool, False),
        ("none", int | None, None),
        ("3", int | None, 3),
        ("b", Literal["a", "b"], "b"),
    ],
)
def test_coerce(value: object, annotation: object, expected: object) -> None:
    assert coerce(value, annotation, "x") == expected


@pytest.mark.parametrize(("value", "annotation"), [("4.5", int), (True, int), ("c", Literal["a", "b"]), ("yes please", bool)])
def test_coerce_rejects(value: object, annotation: object) -> None:
    with pytest.raises(BenchError, match=r"^x"):
        coerce(value, annotation, "x")


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_trial_id_is_stable_and_ignores_the_timeout() -> None:
    a = TrialConfig(suite="s", strategy="baseline", model="gpt2-tiny", workload="train")
    b = TrialConfig(suite="s", strategy="baseline", model="gpt2-tiny", workload="train", timeout_s=5)
    c = TrialConfig(suite="s", strategy="baseline", model="gpt2-tiny", workload="train", steps=21)
    assert a.trial_id == b.trial_id != c.trial_id
    assert TrialConfig.from_dict(a.to_dict()) == a


@pytest.mark.parametrize("kwargs", [{"world_size": 0}, {"device": "tpu"}, {"steps": 0}, {"timeout_s": 0}])
def test_trial_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TrialConfig(suite="s", strategy="baseline", model="gpt2-tiny", workload="train", **kwargs)  # type: ignore[arg-type]


def test_data_config_validation() -> None:
    with pytest.raises(ValueError, match="branching"):
        DataConfig(states=4, branching=5)


def test_train_optimizer_option_picks_adamw_or_sgd_and_rejects_others() -> None:
    import torch

    from bench.workloads import WORKLOADS
    from bench.workloads.train import make_optimizer

    params = [torch.nn.Parameter(torch.zeros(2))]

    def opts(**options: object) -> object:
        cfg = TrialConfig(suite="s", strategy="baseline", model="gpt2-tiny", workload="train", options=options)
        return WORKLOADS.get("train").options(cfg)

    assert isinstance(make_optimizer(opts(), 0.5, params), torch.optim.AdamW)
    sgd = make_optimizer(opts(optimizer="sgd", momentum=0.5), 0.5, params)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.5 and sgd.defaults["lr"] == 0.5
    with pytest.raises(BenchError, match="options.optimizer: 'lamb' is not one of 'adamw', 'sgd'"):
        opts(optimizer="lamb")
