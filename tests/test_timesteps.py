import pytest
import torch

from genhancer_llava.models.timesteps import (
    interpolate,
    logit_normal_quantile,
    sample_timesteps,
    shifted_schedule,
    velocity_target,
)


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_logit_normal_quantiles_match_sigmoid_of_scaled_normal(scale):
    g = torch.Generator().manual_seed(0)
    t = sample_timesteps(100_000, "logit_normal", scale, generator=g).double()
    qs = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)
    empirical = torch.quantile(t, qs)
    expected = torch.tensor(
        [logit_normal_quantile(q.item(), scale) for q in qs], dtype=torch.float64
    )
    assert torch.allclose(empirical, expected, atol=5e-3)
    assert 0.0 < t.min() and t.max() < 1.0


def test_scale_spreads_timesteps_towards_the_ends():
    g = torch.Generator().manual_seed(0)
    narrow = sample_timesteps(50_000, "logit_normal", 1.0, generator=g)
    wide = sample_timesteps(50_000, "logit_normal", 3.0, generator=g)
    edge = lambda t: ((t < 0.1) | (t > 0.9)).float().mean()  # noqa: E731
    assert edge(wide) > 2 * edge(narrow)


def test_uniform_sampling_and_unknown_kind():
    t = sample_timesteps(10_000, "uniform", generator=torch.Generator().manual_seed(0))
    assert 0.45 < t.mean() < 0.55 and t.min() >= 0 and t.max() < 1
    with pytest.raises(ValueError, match="unknown timestep sampling"):
        sample_timesteps(3, "cosine")


def test_interpolation_endpoints_and_velocity():
    x, n = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    assert torch.equal(interpolate(x, n, torch.zeros(2)), x)
    assert torch.equal(interpolate(x, n, torch.ones(2)), n)
    t = torch.tensor([0.3, 0.8])
    dt = 1e-3
    finite = (interpolate(x, n, t + dt) - interpolate(x, n, t)) / dt
    assert torch.allclose(finite, velocity_target(x, n), atol=1e-3)


def test_shifted_schedule_runs_from_one_to_zero_and_shifts_up():
    ts = shifted_schedule(10, 196)
    assert ts[0] == 1.0 and ts[-1] == 0.0 and torch.all(ts[1:] < ts[:-1])
    plain = torch.linspace(1, 0, 11)
    assert torch.all(ts[1:-1] > plain[1:-1])  # mu > 0 for every paper token count
