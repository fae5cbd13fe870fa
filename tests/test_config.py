from __future__ import annotations

from pathlib import Path

import pytest

from dgi.benchmark import dgi_config, load_bench_config, make_method
from dgi.config import ConfigError, auto_codebook_sizes, dump_config, load_config


def test_layers_apply_in_order(tmp_path):
    first = tmp_path / "a.yaml"
    first.write_text("model:\n  width: 64\ntrain:\n  joint_epochs: 5\n")
    second = tmp_path / "b.yaml"
    second.write_text("train:\n  joint_epochs: 7\n")
    config = load_config([first, second], ["train.lr=0.002", "quantizer.codebook_sizes=[8, 8, 4]"])
    assert config.model.width == 64
    assert config.train.joint_epochs == 7
    assert config.train.lr == 0.002
    assert config.quantizer.codebook_sizes == [8, 8, 4]
    assert config.train.batch_size == 256  # default kept


def test_round_trip_through_yaml(tmp_path):
    config = load_config([], ["quantizer.gradient=ste", "search.rule=fused"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config))
    assert load_config([path]) == config


@pytest.mark.parametrize("override, message", [
    ("model.widht=3", "widht"),
    ("quantizer.gradient=magic", "gradient"),
    ("quantizer.codebook_sizes=[8,8]", "codebook_sizes has 2 entries"),
    ("model.width=30", "not divisible"),
    ("novalue", "section.key=value"),
])
def test_bad_values_are_rejected_with_the_field_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config([], [override])


def test_bad_file_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config([path])


def test_codebook_sizes_follow_corpus_size():
    assert auto_codebook_sizes(20_000, 3) == [256, 256, 256]
    assert auto_codebook_sizes(12_101, 3) == [256, 256, 256]
    assert auto_codebook_sizes(5_000, 3) == [128, 128, 128]
    assert auto_codebook_sizes(300, 2) == [16, 16]


CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_every_shipped_config_resolves(path, monkeypatch):
    """A typo in a shipped config (a field, an override, a baseline parameter) fails here, not hours into a run."""
    monkeypatch.chdir(path.parents[1])  # `base:` paths are written relative to the repository root
    if not path.name.startswith("bench-"):
        assert load_config([path]).name
        return
    bench = load_bench_config(path)
    for spec in bench.models:
        if spec.kind in ("dgi", "dual_encoder"):
            assert dgi_config(bench, spec, bench.seeds[0]).train.seed == bench.seeds[0]
        assert make_method(bench, spec, bench.seeds[0], path.parent / "unused", progress=False).name
