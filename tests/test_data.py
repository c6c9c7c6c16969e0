import pytest
import torch
from PIL import Image

from genhancer_llava.config import DataConfig
from genhancer_llava.data import (
    ImageFolderDataset,
    PairTransform,
    SyntheticImages,
    build_dataset,
    collate,
    synthetic_image,
)
from genhancer_llava.errors import GenhancerError

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def test_both_views_come_from_one_crop():
    transform = PairTransform(32, MEAN, STD, (0.9, 1.0))
    encoder_view, target_view = transform(synthetic_image(3, 64))
    assert encoder_view.shape == target_view.shape == (3, 32, 32)
    assert target_view.min() >= -1 and target_view.max() <= 1
    unnormalised = encoder_view * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
    assert torch.allclose(unnormalised, (target_view + 1) / 2, atol=1e-5)


def test_crop_uses_the_configured_scale_range():
    transform = PairTransform(32, MEAN, STD, (0.9, 1.0))
    assert transform.crop.scale == (0.9, 1.0)
    assert transform.crop.interpolation.value == "bicubic"


def test_synthetic_images_are_deterministic_and_varied():
    assert synthetic_image(5, 48).tobytes() == synthetic_image(5, 48).tobytes()
    assert synthetic_image(5, 48).tobytes() != synthetic_image(6, 48).tobytes()
    ds = SyntheticImages(4, 64, PairTransform(32, MEAN, STD))
    assert len(ds) == 4 and ds[0][0].shape == (3, 32, 32)


def test_folder_skips_and_counts_unreadable_images(tmp_path):
    synthetic_image(0, 40).save(tmp_path / "good.png")
    sub = tmp_path / "sub"
    sub.mkdir()
    synthetic_image(1, 40).save(sub / "good.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    full = tmp_path / "full.jpg"
    synthetic_image(2, 40).save(full)
    (tmp_path / "truncated.jpg").write_bytes(full.read_bytes()[:200])
    full.unlink()
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    ds = build_dataset(DataConfig(kind="folder", path=str(tmp_path)), 32, MEAN, STD)
    assert len(ds) == 5
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["skipped"] == 3
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    assert collate([None, None]) == {"skipped": 2}


def test_folder_errors(tmp_path):
    with pytest.raises(GenhancerError, match="does not exist; set data.path"):
        ImageFolderDataset(tmp_path / "missing", PairTransform(32, MEAN, STD))
    with pytest.raises(GenhancerError, match="no images"):
        ImageFolderDataset(tmp_path, PairTransform(32, MEAN, STD))


def test_grayscale_and_rgba_images_become_rgb(tmp_path):
    Image.new("L", (40, 40), 128).save(tmp_path / "gray.png")
    Image.new("RGBA", (40, 40), (1, 2, 3, 4)).save(tmp_path / "rgba.png")
    ds = ImageFolderDataset(tmp_path, PairTransform(32, MEAN, STD))
    assert all(ds[i][0].shape == (3, 32, 32) for i in range(2))
