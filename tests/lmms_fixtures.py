"""Fixture datasets for lmms-eval's mmvp, cv_bench and pope tasks, in the real formats.

They are written into a Hugging Face datasets cache under the real dataset ids
(`lmms-lab-eval/MMVP`, `nyu-visionx/CV-Bench`, `lmms-lab-encoder/POPE`), so that with
HF_HOME pointing at it and HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1 the literal
`lmms-eval --tasks mmvp,cv_bench,pope` loads them with the task code as shipped. Layout:
`$HF_HOME/datasets/<namespace>___<name>/<config>/0.0.0/<hash>/`; configs of one dataset get
distinct hashes, `default` the newest (what `datasets` picks when a task names no config).
Images go through `datasets.Image()` features (never raw pyarrow).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

from PIL import Image

ROWS = 4


def _image(rng: random.Random) -> Image.Image:
    size = (rng.randint(24, 48), rng.randint(24, 48))
    return Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))


def _cache(
    hf_home: Path,
    repo_id: str,
    config: str,
    splits: dict[str, dict],
    features,
    tag: str,
    mtime: float,
) -> Path:
    """Write one config of `repo_id` into the datasets cache (a Parquet build, then moved)."""
    import datasets
    from datasets.packaged_modules.parquet.parquet import Parquet

    cache_dir = hf_home / "datasets"
    work = hf_home / "fixture-build" / repo_id.replace("/", "__") / config
    work.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, rows in splits.items():
        files[split] = [str(work / f"{split}.parquet")]
        datasets.Dataset.from_dict(rows, features=features).to_parquet(files[split][0])
    name = repo_id.split("/")[-1]
    builder = Parquet(
        cache_dir=str(work / "cache"),
        dataset_name=name,
        config_name=config,
        hash=tag,
        data_files=files,
        features=features,
    )
    builder.download_and_prepare()
    namespace, _ = repo_id.split("/")
    target = cache_dir / f"{namespace}___{builder.dataset_name}" / config / "0.0.0" / tag
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(builder.cache_dir, target)
    info = json.loads((target / "dataset_info.json").read_text())
    assert info["config_name"] == config, info["config_name"]
    os.utime(target, (mtime, mtime))
    shutil.rmtree(work)
    return target


def write_mmvp(hf_home: Path, seed: int = 0) -> None:
    from datasets import Features, Value
    from datasets import Image as HFImage

    rng = random.Random(seed)
    features = Features(
        {
            "Index": Value("int64"),
            "Question": Value("string"),
            "Options": Value("string"),
            "Correct Answer": Value("string"),
            "image": HFImage(),
        }
    )
    rows = {
        "Index": [1, 2, 3, 4],
        "Question": ["Is the dog facing left or right?"] * 2 + ["Is the door open?"] * 2,
        "Options": ["(a) Left (b) Right"] * 2 + ["(a) Yes (b) No"] * 2,
        "Correct Answer": ["(a)", "(b)", "(b)", "(a)"],
        "image": [_image(rng) for _ in range(ROWS)],
    }
    _cache(hf_home, "lmms-lab-eval/MMVP", "default", {"train": rows}, features, "fixture", 1e9)


def _cv_rows(rng: random.Random, kinds: list[tuple[str, str, str]], start: int) -> dict:
    rows = {
        k: [] for k in ("idx", "type", "task", "source", "prompt", "choices", "answer", "image")
    }
    for i, (kind, task, source) in enumerate(kinds):
        choices = ["left", "right"] if kind == "2D" else ["closer", "farther", "same", "unsure"]
        rows["idx"].append(start + i)
        rows["type"].append(kind)
        rows["task"].append(task)
        rows["source"].append(source)
        rows["prompt"].append(
            f"Which option fits the {task.lower()}? "
            + " ".join(f"({chr(65 + j)}) {c}" for j, c in enumerate(choices))
        )
        rows["choices"].append(choices)
        rows["answer"].append(f"({chr(65 + rng.randrange(len(choices)))})")
        rows["image"].append(_image(rng))
    return rows


def write_cv_bench(hf_home: Path, seed: int = 0) -> None:
    from datasets import Features, Sequence, Value
    from datasets import Image as HFImage

    rng = random.Random(seed + 1)
    features = Features(
        {
            "idx": Value("int64"),
            "type": Value("string"),
            "task": Value("string"),
            "source": Value("string"),
            "prompt": Value("string"),
            "choices": Sequence(Value("string")),
            "answer": Value("string"),
            "image": HFImage(),
        }
    )
    two_d = [
        ("2D", "Count", "ADE20K"),
        ("2D", "Relation", "COCO"),
        ("2D", "Count", "COCO"),
        ("2D", "Relation", "ADE20K"),
    ]
    three_d = [("3D", "Depth", "Omni3D"), ("3D", "Distance", "Omni3D")] * 2
    default = [two_d[0], two_d[1], three_d[0], three_d[1]]
    for tag, config, kinds, start, mtime in (
        ("fixture-2d", "2D", two_d, 0, 1e9),
        ("fixture-3d", "3D", three_d, 100, 1e9 + 1),
        ("fixture", "default", default, 200, 1e9 + 2),
    ):
        _cache(
            hf_home,
            "nyu-visionx/CV-Bench",
            config,
            {"test": _cv_rows(rng, kinds, start)},
            features,
            tag,
            mtime,
        )


def _pope_rows(rng: random.Random, start: int) -> dict:
    answers = ["yes", "no", "yes", "no"]
    objects = ["car", "dog", "tree", "cat"]
    return {
        "question_id": [str(start + i) for i in range(ROWS)],
        "question": [f"Is there a {o} in the image?" for o in objects],
        "answer": answers,
        "image_source": [f"COCO_val2014_{start + i:012d}" for i in range(ROWS)],
        "category": ["adversarial"] * ROWS,
        "image": [_image(rng) for _ in range(ROWS)],
    }


def write_pope(hf_home: Path, seed: int = 0) -> None:
    from datasets import Features, Value
    from datasets import Image as HFImage

    rng = random.Random(seed + 2)
    features = Features(
        {
            "question_id": Value("string"),
            "question": Value("string"),
            "answer": Value("string"),
            "image_source": Value("string"),
            "category": Value("string"),
            "image": HFImage(),
        }
    )
    full = {
        split: _pope_rows(rng, 100 * (i + 1))
        for i, split in enumerate(("adversarial", "popular", "random"))
    }
    for split, rows in full.items():
        rows["category"] = [split] * ROWS
    _cache(hf_home, "lmms-lab-encoder/POPE", "Full", full, features, "fixture-full", 1e9)
    _cache(
        hf_home,
        "lmms-lab-encoder/POPE",
        "default",
        {"test": _pope_rows(rng, 0)},
        features,
        "fixture",
        1e9 + 1,
    )  # newest: what a task without a config name gets


def write_all(hf_home: Path) -> Path:
    """All three benchmarks' fixtures under HF_HOME=hf_home; returns hf_home."""
    hf_home.mkdir(parents=True, exist_ok=True)
    write_mmvp(hf_home)
    write_cv_bench(hf_home)
    write_pope(hf_home)
    return hf_home


def offline_env(root: Path) -> dict[str, str]:
    """The environment of an offline `python -m lmms_eval` run on these fixtures: datasets under
    ROOT/hf_home, this checkout's entry points (ROOT/meta) and sources on PYTHONPATH, no hub."""
    from .conftest import REPO, write_entry_point_metadata

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_DATASETS_CACHE", "LMMS_EVAL_PLUGINS", "CUDA_VISIBLE_DEVICES")
    }
    pythonpath = [
        str(REPO),
        str(write_entry_point_metadata(root / "meta")),
        env.get("PYTHONPATH", ""),
    ]
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in pythonpath if p),
        HF_HOME=str(write_all(root / "hf_home")),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    return env
