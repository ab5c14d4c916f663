"""The learning-rate schedule of ``run_experiment``: validated, and applied by the Trainer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from composer import Trainer
from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.optim import DecoupledAdamW
from torch.utils.data import DataLoader

from streammix.composer.experiment import ExperimentConfig, lr_scheduler
from streammix.composer.model import LMCollator, tiny_gpt2

STEPS = 20
LR = 3e-3


def _config(**schedule) -> ExperimentConfig:
    return ExperimentConfig(build=Path("build"), out=Path("out"), steps=STEPS, lr=LR, **schedule)


class RecordLr(Callback):
    """The rate each batch trains with (read when the batch starts)."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        if event == Event.BATCH_START:
            self.rates.append(float(state.optimizers[0].param_groups[0]["lr"]))


def _train(config: ExperimentConfig) -> tuple[list[float], float]:
    """Train a one-layer model for ``config.steps`` batches; the rates and the final rate."""
    torch.set_num_threads(1)
    samples = [{"tokens": [i % 7, 1, 2, 3, 4], "domain": 0} for i in range(4 * STEPS)]
    loader = DataLoader(samples, batch_size=4, collate_fn=LMCollator(max_seq_len=8, pad_id=0))
    model = tiny_gpt2(vocab_size=16, max_seq_len=8, n_layer=1, n_head=1, n_embd=8, seed=0)
    record = RecordLr()
    trainer = Trainer(model=model, optimizers=DecoupledAdamW(model.parameters(), lr=config.lr),
                      schedulers=lr_scheduler(config), train_dataloader=loader,
                      max_duration=f"{config.steps}ba", callbacks=[record], device="cpu",
                      progress_bar=False, log_to_console=False)
    trainer.fit()
    final = float(trainer.state.optimizers[0].param_groups[0]["lr"])
    trainer.close()
    return record.rates, final


def test_the_default_is_a_constant_rate() -> None:
    config = _config()
    assert config.lr_schedule == "constant"
    assert lr_scheduler(config) is None
    rates, final = _train(config)
    assert rates == [LR] * STEPS and final == LR


def _multiplier(schedule: str, t: int, *, warmup: int, floor: float) -> float:
    """The schedule's rate / lr after ``t`` steps: the hand formula of the two schedules."""
    if t < warmup:
        return t / warmup
    tau = (t - warmup) / (STEPS - warmup)
    if schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * tau))
    return 1 - (1 - floor) * tau


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decay_warms_up_then_falls_to_the_floor(schedule: str) -> None:
    rates, final = _train(_config(lr_schedule=schedule, lr_warmup_fraction=0.2,
                                  lr_final_fraction=0.1))
    # Composer steps the scheduler at the end of a batch, before the step count moves on:
    # batch i trains at the schedule's value after i - 1 steps (the first two at 0).
    expected = [LR * _multiplier(schedule, max(i - 1, 0), warmup=4, floor=0.1)
                for i in range(STEPS)]
    assert rates == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert max(rates) == pytest.approx(LR)
    assert final == pytest.approx(LR * _multiplier(schedule, STEPS - 1, warmup=4, floor=0.1))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("lr_schedule", "step", "lr_schedule must be one of"),
    ("lr_schedule", "Cosine", "lr_schedule must be one of"),
    ("lr_warmup_fraction", 1.0, "lr_warmup_fraction"),
    ("lr_warmup_fraction", -0.1, "lr_warmup_fraction"),
    ("lr_final_fraction", 1.5, "lr_final_fraction"),
    ("lr_final_fraction", -0.01, "lr_final_fraction"),
])
def test_bad_schedule_settings_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config(**{field: value})
