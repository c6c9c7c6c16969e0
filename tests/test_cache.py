"""Pre-computed targets (`genhancer cache`, data.kind=cached): training on the cache equals
training on the fly with the same crops and seeds; corrupt members are skipped and counted."""

import json
import tarfile

import pytest
import torch

from genhancer_llava.cache import CachedSource, write_cache
from genhancer_llava.config import load_config
from genhancer_llava.errors import GenhancerError
from genhancer_llava.train.launch import prepare_run_dir
from genhancer_llava.train.stage import train_stage

from .conftest import cli_error
from .test_data import jpg_bytes, make_shards, write_shard


def _config(tiny_clip, tiny_vae, out, data_path, *overrides):
    # 32 px through an 8x autoencoder and 2x2 packing: 2 x 2 tokens of 64
    return load_config(
        "tiny",
        overrides=[
            f"encoder.path={tiny_clip}",
            f"run.output_dir={out}",
            "target.kind=flux_vae",
            f"target.path={tiny_vae}",
            "target.downsample=8",
            "target.pack=2",
            "data.kind=shards",
            f"data.path={data_path}",
            "data.shuffle_buffer=4",
            "stage1.steps=6",
            "stage2.steps=3",
            *overrides,
        ],
    )


def _train(cfg, stages=("stage1", "stage2")):
    run = prepare_run_dir(cfg, False, False)
    return {stage: train_stage(run.load_config(), run, stage) for stage in stages}


def test_training_on_the_cache_equals_training_on_the_fly(tiny_clip, tiny_vae, tmp_path):
    pattern = make_shards(tmp_path / "shards", 2, 8)  # 16 images: 4 batches of 4 per epoch
    live = _config(tiny_clip, tiny_vae, tmp_path / "live", pattern)
    cache = write_cache(live, tmp_path / "cache", crops=2, batch_size=5, log=lambda _: None)
    manifest = json.loads((cache / "cache.json").read_text())
    assert manifest["images"] == 16 and manifest["shards"] == ["00000.tar", "00001.tar"]
    assert manifest["stored"] == ["global", "pixels", "posterior"]
    cached = _config(
        tiny_clip, tiny_vae, tmp_path / "cached", pattern, "data.kind=cached", f"data.path={cache}"
    )

    torch.manual_seed(0)
    on_the_fly = _train(live)
    torch.manual_seed(0)
    from_cache = _train(cached)
    for stage in ("stage1", "stage2"):  # 6 steps = 1.5 epochs: both crops of each image used
        a = torch.tensor([loss for _, loss in on_the_fly[stage]["losses"]])
        b = torch.tensor([loss for _, loss in from_cache[stage]["losses"]])
        assert len(a) == on_the_fly[stage]["steps"]
        assert torch.allclose(a, b, rtol=0, atol=1e-5), (stage, a, b)
        assert on_the_fly[stage]["images_seen"] == from_cache[stage]["images_seen"]
    assert len(set(a.tolist())) > 1  # a real curve, not a constant


def _corrupt_cache_members(shard):
    """Rewrite a cache shard: a truncated record, a zero-byte one, one that is not safetensors."""
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    records = [i for i, (name, _) in enumerate(members) if name.endswith(".cache.safetensors")]
    broken = {
        records[1]: lambda d: d[: len(d) // 2],
        records[3]: lambda d: b"",
        records[5]: lambda d: b"not safetensors at all",
    }
    write_shard(
        shard, {name: broken.get(i, lambda d: d)(data) for i, (name, data) in enumerate(members)}
    )
    return len(broken)


def test_cache_round_trip_skips_and_counts_corrupt_members(tiny_clip, tiny_vae, tmp_path):
    good = [jpg_bytes(i) for i in range(14)]
    members = {}
    for i in range(16):
        members[f"{i:03d}.jpg"] = b"not a jpeg" if i in (4, 11) else good.pop()
    (tmp_path / "shards").mkdir()
    write_shard(tmp_path / "shards" / "00000.tar", members)
    live = _config(
        tiny_clip,
        tiny_vae,
        tmp_path / "run",
        tmp_path / "shards" / "00000.tar",
        "stage1.steps=4",
        "data.shuffle_buffer=0",
    )
    cache = write_cache(live, tmp_path / "cache", crops=1, log=lambda _: None)
    assert json.loads((cache / "cache.json").read_text())["unreadable"] == 2
    broken = _corrupt_cache_members(cache / "00000.tar")
    cfg = _config(
        tiny_clip,
        tiny_vae,
        tmp_path / "run",
        "unused",
        "stage1.steps=4",
        "data.kind=cached",
        f"data.path={cache}",
        "data.shuffle_buffer=0",
    )
    summary = _train(cfg, ("stage1",))["stage1"]
    assert summary["steps"] == 4
    assert summary["images_skipped"] == 2 + broken  # unreadable at caching + corrupt in cache
    assert summary["images_seen"] == 16 - 2 - broken
    assert CachedSource(cache).manifest["crops"] == 1


def test_cache_refuses_another_runs_config(tiny_clip, tiny_vae, tmp_path):
    pattern = make_shards(tmp_path / "shards", 1, 4)
    live = _config(tiny_clip, tiny_vae, tmp_path / "run", pattern)
    cache = write_cache(live, tmp_path / "cache", log=lambda _: None)
    other = _config(
        tiny_clip,
        tiny_vae,
        tmp_path / "run",
        pattern,
        "data.kind=cached",
        f"data.path={cache}",
        "target.kind=pixels",
        "target.pack=4",
    )
    from genhancer_llava.cache import check_cache

    with pytest.raises(GenhancerError, match="was made with target=.*re-run genhancer cache"):
        check_cache(other)
    with pytest.raises(GenhancerError, match="exists; pass --overwrite"):
        write_cache(live, cache, log=lambda _: None)


def test_cache_cli_errors_are_one_line(capsys, tiny_clip, tmp_path):
    err = cli_error(
        capsys,
        [
            "cache",
            "--preset",
            "tiny",
            "--output",
            str(tmp_path / "c"),
            f"encoder.path={tiny_clip}",
            "--crops",
            "0",
        ],
    )
    assert "--crops 0" in err
    err = cli_error(
        capsys,
        [
            "cache",
            "--preset",
            "tiny",
            "--output",
            str(tmp_path / "c"),
            f"encoder.path={tiny_clip}",
            "data.kind=cached",
            f"data.path={tmp_path}",
        ],
    )
    assert "already a cache" in err


@pytest.mark.parametrize("workers,start", [(0, 3), (2, 3)])
def test_cached_stream_resumes_exactly(tiny_config, tmp_path, workers, start):
    from torch.utils.data import DataLoader

    from genhancer_llava.data import build_stream, collate

    # 32 synthetic images in 8 shards of 4 records, 2 crops: order, crops and resume as shards
    cache = write_cache(tiny_config(), tmp_path / "cache", crops=2, per_shard=4, log=lambda _: None)
    cfg = tiny_config(
        "data.kind=cached",
        f"data.path={cache}",
        "data.shuffle_buffer=3",
        f"data.num_workers={workers}",
    ).data
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def batches(start_batches, n):
        stream = build_stream(cfg, 32, mean, std, seed=0, batch_size=3, start_batches=start_batches)
        it = iter(DataLoader(stream, batch_size=3, num_workers=workers, collate_fn=collate))
        return [next(it) for _ in range(n)]

    straight = batches(0, 14)  # 42 > 32 images: into the second epoch (crop 1)
    resumed = batches(start, 14 - start)
    for a, b in zip(straight[start:], resumed, strict=True):
        assert a["keys"] == b["keys"]
        assert torch.equal(a["pixel_values"], b["pixel_values"])
        assert torch.equal(a["global"], b["global"])
