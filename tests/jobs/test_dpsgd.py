"""DP-SGD runs: planned and charged before the first step, and what Opacus' own accountant saw
while training is exactly what was charged."""

from __future__ import annotations

import math

import pytest
import torch

from refluent.jobs.dpsgd import DPConfig, plan_run, train_dp
from refluent.jobs.network import tabular_mlp
from refluent.privacy.accountant import Run, accountant

pytestmark = pytest.mark.unit


def _task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return x, (x[:, 0] - 0.5 * x[:, 1] + 0.25 * x[:, 2] > 0).long()


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_train_dp__learns_the_rule_and_opacus_recorded_exactly_the_charged_run(mode: str
                                                                               ) -> None:
    x, y = _task(4000, 1)
    charged: list[Run] = []
    net = tabular_mlp(3, 2, (16,))
    config = DPConfig(epochs=4, batch_size=128, learning_rate=0.02, noise_multiplier=1.0,
                      grad_sample_mode=mode, seed=3)
    result = train_dp(net, x, y, "classification", config, charge=charged.append)
    # Poisson sampling at Opacus' rate for a loader of 128 rows: 1 / ceil(4000 / 128).
    assert charged == [Run(1.0, 1 / 32, 4 * 32)] == [result.run]
    assert result.opacus_history == [(1.0, 1 / 32, 128)]
    x_test, y_test = _task(4000, 2)
    with torch.no_grad():
        accuracy = float((net(x_test).argmax(1) == y_test).float().mean())
    assert accuracy > 0.9  # a linear rule; chance is 0.5


def test_train_dp__a_refused_charge_runs_no_step() -> None:
    x, y = _task(500, 1)
    net = tabular_mlp(3, 2, (8,))
    before = [p.detach().clone() for p in net.parameters()]

    def refuse(run: Run) -> None:
        raise RuntimeError("over budget")

    with pytest.raises(RuntimeError, match="over budget"):
        train_dp(net, x, y, "classification", DPConfig(noise_multiplier=1.0), charge=refuse)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


@pytest.mark.parametrize("name", ["prv", "rdp"])
def test_plan_run__the_noise_found_reaches_the_target_epsilon(name: str) -> None:
    config = DPConfig(epochs=3, batch_size=100, target_epsilon=2.0, delta=1e-5,
                      accountant=name)
    run = plan_run(2050, config)
    assert run.sample_rate == 1 / 21 and run.steps == 3 * 21
    acc = accountant(name)
    acc.history = [tuple(run)]
    assert 2.0 - 0.05 <= acc.get_epsilon(1e-5) <= 2.0 + 1e-9


def test_train_dp__empty_poisson_batches_still_count_as_steps() -> None:
    x, y = _task(3, 1)  # one row per step expected: some steps sample none
    net = tabular_mlp(3, 2, (4,))
    result = train_dp(net, x, y, "classification",
                      DPConfig(epochs=20, batch_size=1, noise_multiplier=2.0, seed=5))
    assert result.opacus_history == [(2.0, 1 / 3, 60)]
    assert all(math.isfinite(p) for p in result.epoch_loss)
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_train_dp__regression() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 2, generator=g)
    y = (2 * x[:, 0] - x[:, 1]).reshape(-1, 1)
    net = tabular_mlp(2, 1, (16,))
    train_dp(net, x, y, "regression", DPConfig(epochs=5, batch_size=100, noise_multiplier=0.8,
                                               max_grad_norm=5.0, learning_rate=0.02, seed=1))
    with torch.no_grad():
        mae = float((net(x) - y).abs().mean())
    assert mae < 0.5 * float(y.abs().mean())  # predicting 0 has MAE mean |y|
