"""Linear probes of the global token: what does a frozen encoder's one vector hold?

For each attribute, a multinomial logistic regression (L2, full-batch L-BFGS on standardised
features) is fit on the global tokens of `train` held-out scenes and scored on `test` others.
Chance is 1 / (number of values).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F

from .clip_pretrain import CLIP_MEAN, CLIP_STD, render_batch
from .world import ATTRIBUTES, draw_scene

__all__ = ["probe_scenes", "fit_probe", "global_tokens", "probe_encoder"]


def probe_scenes(num: int, seed: int = 4):
    """Held-out scenes (a seed no training set uses) and their labels per attribute."""
    rng = random.Random(seed)
    scenes = [draw_scene(rng) for _ in range(num)]
    labels = {a: torch.tensor([s.attributes()[a] for s in scenes]) for a in ATTRIBUTES}
    return scenes, labels


def fit_probe(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    l2: float = 1e-3,
    iters: int = 200,
) -> float:
    """Test accuracy (%) of a logistic-regression probe trained on (x_train, y_train)."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    xa, xb = (x_train - mean) / std, (x_test - mean) / std
    classes = int(max(y_train.max(), y_test.max())) + 1
    w = torch.zeros(xa.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xa @ w + b, y_train) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((xb @ w + b).argmax(1) == y_test).float().mean() * 100)


@torch.no_grad()
def global_tokens(model_dir: str | Path, scenes, batch_size: int = 500) -> torch.Tensor:
    """The CLIP folder's global token (projected CLS, as `get_image_features`) per scene."""
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(model_dir).eval()
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    chunks = []
    for i in range(0, len(scenes), batch_size):
        pixels = (render_batch(scenes[i : i + batch_size]) - mean) / std
        out = model.get_image_features(pixel_values=pixels)
        chunks.append(getattr(out, "pooler_output", out))
    return torch.cat(chunks)


def probe_encoder(
    model_dir: str | Path, train: int = 3000, test: int = 3000, seed: int = 4
) -> dict[str, float]:
    """attribute -> probe test accuracy (%) for the encoder in `model_dir`."""
    scenes, labels = probe_scenes(train + test, seed)
    x = global_tokens(model_dir, scenes)
    return {
        a: round(fit_probe(x[:train], y[:train], x[train:], y[train:]), 2)
        for a, y in labels.items()
    }
