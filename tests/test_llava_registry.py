"""The tower registry: genhancer names -> exported folders, and its one-line errors."""

from __future__ import annotations

import json

import pytest

from genhancer_llava.errors import GenhancerError
from genhancer_llava.mllm.registry import (
    REGISTRY_ENV,
    default_registry_file,
    is_genhancer_name,
    known_towers,
    resolve_tower,
)

from .llava_tiny import make_exported_encoder


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return make_exported_encoder(tmp_path_factory.mktemp("enc") / "genhancer-clip")


@pytest.fixture
def registry(tmp_path, encoder, monkeypatch):
    path = tmp_path / "towers.yaml"
    path.write_text(f"default: {encoder}\nclip-tiny: {encoder}\n")
    monkeypatch.setenv(REGISTRY_ENV, str(path))
    return path


def test_names_the_hook_owns(encoder):
    assert is_genhancer_name("genhancer")
    assert is_genhancer_name("genhancer:clip-tiny")
    assert is_genhancer_name(str(encoder))  # a folder holding genhancer.json
    assert not is_genhancer_name("openai/clip-vit-large-patch14-336")
    assert not is_genhancer_name(None)


def test_path_forms_resolve(encoder):
    spec = resolve_tower(f"genhancer:{encoder}")
    assert spec.path == encoder and spec.kind == "clip" and spec.has_cls_token
    assert resolve_tower(str(encoder)).path == encoder


def test_registry_names_and_default(registry, encoder):
    assert known_towers() == {"default": encoder, "clip-tiny": encoder}
    assert resolve_tower("genhancer").path == encoder
    assert resolve_tower("genhancer:clip-tiny").path == encoder


def test_relative_registry_entries_are_relative_to_the_file(tmp_path, encoder, monkeypatch):
    (tmp_path / "towers.yaml").write_text(f"mine: {encoder.parent.name}/{encoder.name}\n")
    encoder_link = tmp_path / encoder.parent.name
    encoder_link.symlink_to(encoder.parent)
    monkeypatch.setenv(REGISTRY_ENV, str(tmp_path / "towers.yaml"))
    assert resolve_tower("genhancer:mine").path == (encoder_link / encoder.name).resolve()


def test_default_registry_file(monkeypatch, tmp_path):
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_registry_file() == tmp_path / "genhancer" / "towers.yaml"
    assert known_towers() == {}  # no file: an empty registry


def test_unknown_name_lists_known_ones(registry):
    with pytest.raises(GenhancerError) as err:
        resolve_tower("genhancer:nope")
    message = str(err.value)
    assert "\n" not in message
    assert "unknown genhancer tower 'nope'" in message and "clip-tiny, default" in message


def test_unknown_default_without_registry(monkeypatch, tmp_path):
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    with pytest.raises(GenhancerError, match="unknown genhancer tower 'default'; known: none"):
        resolve_tower("genhancer")


def test_folder_that_is_not_an_encoder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GenhancerError, match="is not an encoder folder") as err:
        resolve_tower(f"genhancer:{empty}")
    assert "\n" not in str(err.value)
    llm = tmp_path / "llm"
    llm.mkdir()
    (llm / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(GenhancerError, match="holds a 'llama' model, not an encoder"):
        resolve_tower(f"genhancer:{llm}")
    with pytest.raises(GenhancerError, match="does not exist"):
        resolve_tower(f"genhancer:{tmp_path / 'missing'}")


def test_bad_registry_file(tmp_path, monkeypatch):
    bad = tmp_path / "towers.yaml"
    bad.write_text("- a list\n- not a map\n")
    monkeypatch.setenv(REGISTRY_ENV, str(bad))
    with pytest.raises(GenhancerError, match="must map names to folders"):
        resolve_tower("genhancer:x")
    monkeypatch.setenv(REGISTRY_ENV, str(tmp_path / "absent.yaml"))
    with pytest.raises(GenhancerError, match="absent.yaml does not exist"):
        known_towers()
