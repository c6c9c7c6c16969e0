"""The toy world, its probe, the shuffle diagnostic, and a quick study end to end."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genhancer_llava.models.diagnostics import shuffle_gap
from genhancer_llava.models.timesteps import interpolate, velocity_target
from genhancer_llava.toy.probe import fit_probe
from genhancer_llava.toy.world import (
    ATTRIBUTES,
    CELL,
    COLOURS,
    draw_scene,
    pair_differing,
    render,
)


def count_objects(image) -> int:
    """Objects sit in separate cells: the occupied cells are the objects."""
    occupied = np.asarray(image).astype(int).sum(-1) > 0
    return sum(
        int(occupied[r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL].any())
        for r in range(2)
        for c in range(2)
    )


def seen_attributes(image, colour: str) -> dict[str, int]:
    """The attributes as the pixels show them (the triangle is the only object in its colour)."""
    arr = np.asarray(image).astype(int)
    mask = np.abs(arr - np.array(COLOURS[colour])).sum(-1) == 0
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    position = int(cy >= CELL) * 2 + int(cx >= CELL)
    dy = cy - (ys.min() + ys.max()) / 2
    dx = cx - (xs.min() + xs.max()) / 2
    if abs(dy) > abs(dx):
        orientation = 0 if dy > 0 else 2  # the centroid sits towards the base
    else:
        orientation = 3 if dx > 0 else 1
    area = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    hollow = int(mask.sum() / area < 0.4)
    return {
        "position": position,
        "orientation": orientation,
        "state": hollow,
        "colour": list(COLOURS).index(colour),
        "count": count_objects(image) - 1,
    }


def test_attributes_recorded_are_the_attributes_drawn():
    rng = random.Random(0)
    for _ in range(300):
        scene = draw_scene(rng)
        image = render(scene)
        assert seen_attributes(image, scene.triangle.colour) == scene.attributes()


@pytest.mark.parametrize("attribute", list(ATTRIBUTES))
def test_pairs_differ_in_exactly_one_attribute(attribute):
    rng = random.Random(1)
    for _ in range(60):
        a, b = pair_differing(rng, attribute)
        ra, rb = a.attributes(), b.attributes()
        assert {k for k in ra if ra[k] != rb[k]} == {attribute}
        # and the pixels agree with the records on both sides
        for scene in (a, b):
            assert seen_attributes(render(scene), scene.triangle.colour) == scene.attributes()


def test_probe_recovers_a_planted_attribute_and_gives_chance_on_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 16, generator=g)
    planted = x[:, :4].argmax(1)  # a linear function of the features
    noise = torch.randint(0, 4, (2000,), generator=g)
    assert fit_probe(x[:1000], planted[:1000], x[1000:], planted[1000:]) > 90
    assert abs(fit_probe(x[:1000], noise[:1000], x[1000:], noise[1000:]) - 25) < 6


class _Stub(nn.Module):
    """An Enhancer-shaped module: the condition is the flattened target itself."""

    def __init__(self, denoiser: nn.Module):
        super().__init__()
        self.denoiser = denoiser

    def condition(self, pixel_values):
        b = pixel_values.shape[0]
        return pixel_values.reshape(b, -1), pixel_values.reshape(b, 1, -1)


class _FlowToy(nn.Module):
    """Rectified flow with a closed-form predictor: `copy` reads the clean target from the
    condition; otherwise it predicts from x_t alone (ignores the condition by construction)."""

    def __init__(self, copy: bool):
        super().__init__()
        self.copy = copy
        self.scale = nn.Parameter(torch.tensor(1.0))

    def velocity(self, x_t, t, pooled, context):
        if self.copy:
            x0 = pooled.view_as(x_t)
            tt = t.view(-1, 1, 1)
            return (x_t - x0) / tt.clamp_min(1e-3)  # noise - x0, given x0
        return -x_t * self.scale

    def forward(self, target, pooled, context):
        t = torch.rand(target.shape[0])
        noise = torch.randn_like(target)
        x_t = interpolate(target, noise, t)
        v = self.velocity(x_t, t, pooled, context)
        return {"flow_loss": F.mse_loss(v, velocity_target(target, noise))}


def test_shuffle_gap_is_zero_for_a_denoiser_that_ignores_its_condition():
    target = torch.randn(8, 4, 3)
    gap = shuffle_gap(_Stub(_FlowToy(copy=False)), target, target)
    assert gap["gap"] == 0.0
    assert all(gap[f"gap_t{t}"] == 0.0 for t in (0.25, 0.5, 0.75, 0.95))


def test_shuffle_gap_is_positive_for_a_denoiser_that_copies_its_condition():
    target = torch.randn(8, 4, 3)
    before = torch.random.get_rng_state()
    gap = shuffle_gap(_Stub(_FlowToy(copy=True)), target, target)
    assert torch.equal(before, torch.random.get_rng_state())  # the caller's RNG untouched
    assert gap["loss_true"] < 1e-6 < gap["loss_shuffled"]
    assert gap["gap"] > 1.0
    assert gap["gap_t0.95"] > 0


@pytest.mark.slow
def test_quick_study_runs_enhance_and_writes_the_report(tmp_path):
    """Pretrain (tiny) -> data -> base scores -> enhance (both stages, real launcher) ->
    scores -> report. Sizes are tiny: the numbers mean nothing, the wiring is the point."""
    from genhancer_llava.cli.main import main

    out = tmp_path / "study"
    main(["toy", "study", "--quick", "--output", str(out), "--seeds", "0", "--settings", "global"])
    results = json.loads((out / "report" / "results.json").read_text())
    run = results["runs"]["global"]["0"]
    assert set(run["scores"]["probe"]) == set(ATTRIBUTES)
    assert set(run["stages"]) == {"stage1", "stage2"}
    gap = run["stages"]["stage1"]["shuffle_gap"]
    assert {"gap", "loss_true", "loss_shuffled", "gap_t0.95"} <= set(gap)
    summary = json.loads(
        (out / "runs" / "global-seed0" / "stage2" / "final" / "summary.json").read_text()
    )
    assert "gap" in summary["shuffle_gap"]
    report = (out / "report" / "report.md").read_text()
    assert "| base |" in report and "| global |" in report
    assert (out / "report" / "probes.png").is_file()
    # the base is a normal CLIP folder: the project's scorer reads it, one token per word
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out / "base-clip")
    assert len(tok("a photo of red triangle pointing up")["input_ids"]) == 9


def test_logit_normal_mean_shifts_mass_to_high_t():
    from genhancer_llava.config import load_config
    from genhancer_llava.models.timesteps import logit_normal_quantile, sample_timesteps

    g = torch.Generator().manual_seed(0)
    t = sample_timesteps(20000, "logit_normal", 1.0, generator=g, mean=1.5)
    assert abs(t.median().item() - logit_normal_quantile(0.5, 1.0, mean=1.5)) < 0.01
    assert abs(logit_normal_quantile(0.5, 1.0, mean=1.5) - 1 / (1 + np.exp(-1.5))) < 1e-9
    assert (t > 0.75).float().mean() > 0.5  # s=1, m=0 puts about 14% there
    cfg = load_config("toy")
    assert cfg.denoiser.logit_normal_mean == 3.0 and cfg.stage2.mode == "all"


def test_toy_pairs_load_by_their_type_column_and_say_they_are_not_mmvp_vlm(tmp_path):
    """The toy benchmark has 5 patterns, not MMVP-VLM's 9: its marker keeps the type column
    (no positional-rule warning) and titles name it as toy pairs."""
    import warnings

    from genhancer_llava.evaluation.mmvp import load_benchmark
    from genhancer_llava.toy.benchmark import write_mmvp

    folder = write_mmvp(tmp_path / "toy-mmvp", pairs_per_attribute=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bench = load_benchmark(folder)
    assert len(bench.pairs) == 10 and len({p.pattern for p in bench.pairs}) == 5
    assert bench.source.startswith("toy-world pairs, not MMVP-VLM")
