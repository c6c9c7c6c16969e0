"""The lean training loop: one host sync per optimiser step, fused AdamW on CUDA only, and the
optional compiled / activation-checkpointed DiT computing what the plain one does."""

import os
import sys

import pytest
import torch

from genhancer_llava.models.enhancer import apply_speed_options, build_enhancer
from genhancer_llava.train.launch import prepare_run_dir
from genhancer_llava.train.optim import build_optimizer, use_fused_adamw
from genhancer_llava.train.stage import StageTrainer


def _loss_and_grads(enhancer, seed=0):
    torch.manual_seed(seed)
    pixels = torch.randn(2, 3, 32, 32)
    target = torch.randn(2, 64, 48)
    loss = enhancer(pixels, target)["flow_loss"]
    loss.backward()
    grads = [p.grad.clone() for p in enhancer.denoiser.parameters() if p.grad is not None]
    enhancer.zero_grad()
    return loss.detach(), grads


def _pair(tiny_config):
    cfg = tiny_config()
    torch.manual_seed(0)
    plain = build_enhancer(cfg)
    torch.manual_seed(0)
    other = build_enhancer(cfg)
    return plain, other


def _assert_same(a, b):
    assert torch.allclose(a[0], b[0], atol=1e-5), (a[0], b[0])
    assert len(a[1]) == len(b[1]) > 0
    for ga, gb in zip(a[1], b[1], strict=True):
        assert torch.allclose(ga, gb, atol=1e-5)


def test_activation_checkpointing_computes_the_same_loss_and_gradients(tiny_config):
    plain, checkpointed = _pair(tiny_config)
    apply_speed_options(checkpointed, activation_checkpointing=True)
    assert checkpointed.denoiser.transformer.gradient_checkpointing
    _assert_same(_loss_and_grads(plain), _loss_and_grads(checkpointed))


@pytest.mark.slow
def test_compiled_denoiser_matches_eager_and_keeps_checkpoint_keys(tiny_config):
    plain, compiled = _pair(tiny_config)
    apply_speed_options(compiled, compile_denoiser=True)  # inductor, on the CPU
    assert compiled.state_dict().keys() == plain.state_dict().keys()
    for seed in (0, 1):  # the second call runs the compiled graph again
        _assert_same(_loss_and_grads(plain, seed), _loss_and_grads(compiled, seed))


def test_fused_adamw_only_where_the_device_has_it(tiny_config):
    assert use_fused_adamw("cuda:0") and not use_fused_adamw("cpu")
    assert not use_fused_adamw(None)
    cfg = tiny_config()
    optimizer, _ = build_optimizer(cfg, build_enhancer(cfg), 1e-3, "cpu")
    assert not optimizer.defaults["fused"]


def test_one_host_sync_per_optimiser_step_not_per_micro_batch(tiny_config, monkeypatch):
    cfg = tiny_config("optim.gradient_accumulation_steps=3", "stage1.steps=4", "run.log_every=4")
    run = prepare_run_dir(cfg, False, False)
    trainer = StageTrainer(run.load_config(), run, "stage1")
    syncs = []
    for name in ("item", "tolist", "__bool__", "__float__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, _name=name, **k):
            if sys._getframe(1).f_code.co_filename.endswith(os.path.join("train", "stage.py")):
                syncs.append(_name)  # the loop's own (data loading crops on the host)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    trainer.fit()
    monkeypatch.undo()
    # 12 micro-batches, 4 optimiser steps: a finiteness check per step, losses fetched at
    # the first step and at log_every; nothing per micro-batch
    assert syncs.count("item") == 4, syncs
    assert len(syncs) < 12, syncs
    assert [step for step, _ in trainer.progress.losses] == [1, 4]
