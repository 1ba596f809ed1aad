"""The model registry: built-in entries as the issue specifies them, user files, bad files."""

from __future__ import annotations

import pytest

from edge_slm.models.registry import BUILTIN_REGISTRY, load_registry, lookup
from edge_slm.common.errors import EdgeError

TINY_ENTRY = """
[tiny]
hf_id = "someone/tiny-sst2"
labels = ["neg", "pos"]
seq_len = 16

[tiny.config]
model_type = "bert"
hidden_size = 32
"""


def test_builtin_entries_match_the_model_cards():
    registry = load_registry()
    expected = {
        "mobilebert": ("Alireza1044/mobilebert_sst2", "google/mobilebert-uncased", "mobilebert", 0.904),
        "distilbert": ("distilbert-base-uncased-finetuned-sst-2-english", "distilbert-base-uncased",
                       "distilbert", 0.913),
        "tinybert": ("Vishnou/TinyBERT_SST2", "huawei-noah/TinyBERT_General_4L_312D", "bert", 0.886),
    }
    assert set(registry) == set(expected)
    for name, (hf_id, base_id, model_type, accuracy) in expected.items():
        entry = registry[name]
        assert (entry.hf_id, entry.base_id, entry.model_type) == (hf_id, base_id, model_type)
        assert entry.reference["accuracy"] == accuracy
        assert entry.labels == ["negative", "positive"]
        assert entry.seq_len == 128
    tiny = registry["tinybert"].config
    assert (tiny["num_hidden_layers"], tiny["hidden_size"]) == (4, 312)


def test_builtin_configs_build_transformers_configs():
    transformers = pytest.importorskip("transformers")
    from edge_slm.convert.architectures import spec_for

    for entry in load_registry().values():
        spec_for(entry.model_type)
        config = transformers.CONFIG_MAPPING[entry.model_type].from_dict(entry.config)
        assert config.vocab_size == 30522


def test_a_user_file_adds_an_entry_without_code(tmp_path):
    extra = tmp_path / "mine.toml"
    extra.write_text(TINY_ENTRY)
    registry = load_registry([extra])
    assert {"mobilebert", "distilbert", "tinybert", "tiny"} <= set(registry)
    assert registry["tiny"].labels == ["neg", "pos"]
    assert registry["tiny"].reference is None
    assert registry["tiny"].defined_in == str(extra)


@pytest.mark.parametrize("text, message", [
    ("[x\nhf_id = 1", "not valid TOML"),
    (TINY_ENTRY.replace('seq_len = 16\n', ''), "lacks 'seq_len'"),
    (TINY_ENTRY.replace('seq_len = 16', 'seq_len = "16"'), "'seq_len' should be a int"),
    (TINY_ENTRY.replace('seq_len = 16', 'seq_len = true'), "'seq_len' should be a int"),
    (TINY_ENTRY.replace('seq_len = 16', 'seq_len = 16\ncolour = "red"'), "unknown keys colour"),
    (TINY_ENTRY.replace('["neg", "pos"]', '["only"]'), "at least two"),
    (TINY_ENTRY.replace('["neg", "pos"]', '["pos", "pos"]'), "names a class twice"),
    (TINY_ENTRY.replace('model_type = "bert"\n', ''), "lacks model_type"),
    (TINY_ENTRY + 'max_position_embeddings = 8\n', "'seq_len' 16 exceeds the model's max_position_embeddings (8)"),
    (TINY_ENTRY + '\n[tiny.reference]\naccuracy = 88.6\n', "fraction"),
])
def test_bad_registry_files_are_one_line_errors(tmp_path, text, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(EdgeError) as caught:
        load_registry([bad])
    assert message in caught.value.message
    assert str(bad) in caught.value.message
    assert "\n" not in caught.value.one_line()


def test_missing_registry_file(tmp_path):
    with pytest.raises(EdgeError, match="registry file not found"):
        load_registry([tmp_path / "nope.toml"])


def test_lookup_suggests_the_closest_name():
    with pytest.raises(EdgeError) as caught:
        lookup("mobilbert", load_registry())
    assert "did you mean 'mobilebert'" in caught.value.hint


def test_builtin_registry_ships_as_package_data():
    assert BUILTIN_REGISTRY.name == "registry.toml" and BUILTIN_REGISTRY.is_file()
