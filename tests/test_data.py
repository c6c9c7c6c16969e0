import io
import tarfile

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from genhancer_llava.config import DataConfig
from genhancer_llava.data import (
    FolderSource,
    ImageStream,
    PairTransform,
    ShardSource,
    SyntheticSource,
    build_stream,
    collate,
    expand_shards,
    synthetic_image,
    worker_skip,
)
from genhancer_llava.errors import GenhancerError

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def write_shard(path, members: dict[str, bytes]):
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def png_bytes(index: int, size: int = 40) -> bytes:
    buffer = io.BytesIO()
    synthetic_image(index, size).save(buffer, format="PNG")
    return buffer.getvalue()


def jpg_bytes(index: int, size: int = 40) -> bytes:
    buffer = io.BytesIO()
    synthetic_image(index, size).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_shards(folder, count: int, per_shard: int):
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(count):
        members = {}
        for i in range(per_shard):
            key = f"{s:03d}{i:03d}"
            members[f"{key}.jpg"] = jpg_bytes(s * 100 + i)
            members[f"{key}.txt"] = b"a caption we never use"
        write_shard(folder / f"{s:05d}.tar", members)
    return f"{folder}/{{00000..{count - 1:05d}}}.tar"


def keys_of(stream: ImageStream, n: int) -> list[str]:
    it = iter(stream)
    return [next(it)[2] for _ in range(n)]


def test_both_views_come_from_one_crop():
    transform = PairTransform(32, MEAN, STD, (0.9, 1.0))
    encoder_view, target_view = transform(synthetic_image(3, 64), seed=1)
    assert encoder_view.shape == target_view.shape == (3, 32, 32)
    assert target_view.min() >= -1 and target_view.max() <= 1
    unnormalised = encoder_view * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
    assert torch.allclose(unnormalised, (target_view + 1) / 2, atol=1e-5)


def test_crops_are_seeded_per_item_and_leave_the_global_rng_alone():
    transform = PairTransform(32, MEAN, STD, (0.5, 1.0))
    image = synthetic_image(3, 64)
    state = torch.random.get_rng_state()
    a, b = transform(image, seed=1)[0], transform(image, seed=1)[0]
    assert torch.equal(a, b)
    assert not torch.equal(a, transform(image, seed=2)[0])
    assert torch.equal(state, torch.random.get_rng_state())


def test_synthetic_images_are_deterministic_and_varied():
    assert synthetic_image(5, 48).tobytes() == synthetic_image(5, 48).tobytes()
    assert synthetic_image(5, 48).tobytes() != synthetic_image(6, 48).tobytes()


@pytest.mark.parametrize("world,workers", [(1, 1), (2, 1), (2, 3), (3, 2)])
def test_slots_split_an_epoch_disjointly_and_cover_it(world, workers):
    source = SyntheticSource(30, 16)
    slots = world * workers
    seen = [[item.key for item in source.epoch(0, s, slots, seed=0)] for s in range(slots)]
    flat = [k for keys in seen for k in keys]
    assert len(flat) == len(set(flat)) == 30
    other_epoch = [item.key for item in source.epoch(1, 0, slots, seed=0)]
    assert other_epoch != seen[0]  # a new order every epoch


def test_shards_split_by_whole_shard_or_by_sample(tmp_path):
    pattern = make_shards(tmp_path / "shards", 4, 3)
    source = ShardSource(pattern)
    for slots in (2, 3, 4, 8):  # 8 > 4 shards: split by sample
        seen = [[i.key for i in source.epoch(0, s, slots, seed=0)] for s in range(slots)]
        flat = [k for keys in seen for k in keys]
        assert len(flat) == len(set(flat)) == 12, slots


def test_worker_skip_counts_round_robin_batches():
    assert [worker_skip(5, w, 2) for w in range(2)] == [3, 2]
    assert [worker_skip(1, w, 3) for w in range(3)] == [1, 0, 0]
    assert worker_skip(0, 0, 1) == 0 and worker_skip(7, 0, 1) == 7


@pytest.mark.parametrize("workers,start", [(0, 4), (2, 4), (2, 3), (3, 5)])
def test_resumed_stream_continues_exactly(workers, start):
    cfg = DataConfig(kind="synthetic", num_images=10, num_workers=workers)

    def batches(start, n):
        stream = build_stream(cfg, 16, MEAN, STD, seed=3, batch_size=3, start_batches=start)
        loader = DataLoader(stream, batch_size=3, num_workers=workers, collate_fn=collate)
        it = iter(loader)
        return [next(it) for _ in range(n)]

    straight = batches(0, 8)  # crosses epoch boundaries (10 images, batches of 3)
    resumed = batches(start, 8 - start)
    for a, b in zip(straight[start:], resumed, strict=True):
        assert a["keys"] == b["keys"]
        assert torch.equal(a["pixel_values"], b["pixel_values"])


def test_bad_members_are_skipped_and_counted(tmp_path):
    good = jpg_bytes(1)
    members = {
        "a.jpg": good,
        "a.txt": b"caption",
        "b.jpg": good[: len(good) // 3],  # truncated
        "c.png": b"",  # zero bytes
        "d.jpg": b"this is text, not a jpeg",  # corrupt
        "e.txt": b"a text member with no image beside it",
        "f.webp": png_bytes(2),  # wrong extension, still an image PIL reads
    }
    write_shard(tmp_path / "00000.tar", members)
    stream = ImageStream(ShardSource(str(tmp_path / "00000.tar")), PairTransform(32, MEAN, STD))
    it = iter(stream)
    batch = collate([next(it) for _ in range(6)])
    assert batch["skipped"] == 4
    assert sorted(k.split("/")[1] for k in batch["keys"]) == ["a", "f"]


def test_folder_skips_unreadable_files(tmp_path):
    synthetic_image(0, 40).save(tmp_path / "good.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    Image.new("L", (40, 40), 128).save(tmp_path / "gray.png")
    source = FolderSource(tmp_path)
    assert len(source) == 4
    stream = ImageStream(source, PairTransform(32, MEAN, STD))
    it = iter(stream)
    batch = collate([next(it) for _ in range(4)])
    assert batch["skipped"] == 2 and batch["pixel_values"].shape == (2, 3, 32, 32)
    assert collate([None, None]) == {"skipped": 2, "keys": []}


def test_source_errors(tmp_path):
    with pytest.raises(GenhancerError, match="does not exist; set data.path"):
        FolderSource(tmp_path / "missing")
    with pytest.raises(GenhancerError, match="no images"):
        FolderSource(tmp_path)
    make_shards(tmp_path / "s", 2, 1)
    with pytest.raises(GenhancerError, match="1 of 3 shards are missing .*00002.tar"):
        expand_shards(f"{tmp_path}/s/{{00000..00002}}.tar")
    listing = tmp_path / "shards.txt"
    listing.write_text("s/00000.tar\ns/00001.tar\n")
    assert [p.name for p in expand_shards(str(listing))] == ["00000.tar", "00001.tar"]


def test_too_few_images_for_the_slots(monkeypatch):
    import types

    import genhancer_llava.data as data

    # as if this were dataloader worker 0 of 2 on rank 0 of 2: 4 slots for 3 images
    monkeypatch.setattr(data, "get_worker_info", lambda: types.SimpleNamespace(id=0, num_workers=2))
    stream = ImageStream(SyntheticSource(3, 16), PairTransform(8, MEAN, STD), world_size=2)
    with pytest.raises(GenhancerError, match="3 images cannot feed 2 ranks x 2 workers"):
        next(iter(stream))
