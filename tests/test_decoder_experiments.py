"""benchmarks/decoder_experiments.py: a variant continues a copy of a run; the table reads validation only."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "decoder_experiments.py"


def load_script():
    spec = importlib.util.spec_from_file_location("decoder_experiments", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variant_continues_a_copy_and_the_table_lists_it(trained_run, tmp_path):
    experiments = load_script()
    variant = tmp_path / "decoder-1"
    experiments.run_variant(trained_run, variant, ["train.decoder_epochs=1"])
    assert yaml.safe_load((variant / "config.yaml").read_text())["train"]["decoder_epochs"] == 1
    phases = [json.loads(line)["phase"] for line in (variant / "log.jsonl").read_text().splitlines()]
    assert phases == ["dense", "joint", "joint", "decoder"]
    assert len((trained_run / "log.jsonl").read_text().splitlines()) == 3  # the base is untouched
    out = tmp_path / "table"
    experiments.write_table([trained_run, variant], out, "ndcg@10", "test")
    rows = json.loads((out / "experiments.json").read_text())["rows"]
    assert [row["run"] for row in rows] == ["dgi", "decoder-1"] and rows[1]["overrides"] == ["train.decoder_epochs=1"]
    assert rows[1]["per_epoch"][-1]["phase"] == "decoder" and len(rows[1]["beam_recall"]) == 3
    assert (out / "curves-decoder-1.png").read_bytes().startswith(b"\x89PNG")
    assert "decoder-1" in (out / "experiments.md").read_text()


def test_beam_widths_scores_every_rule_at_every_width_on_validation(trained_run):
    result = load_script().beam_widths(trained_run, [5, 10])
    table = result["by_rule_and_width"]
    assert result["split"] == "valid" and set(table) == {"lexicographic", "fused", "rerank", "dense"}
    for rule in table:
        assert set(table[rule]) == {"5", "10"} and all(0.0 <= v <= 1.0 for v in table[rule].values())
    assert table["dense"]["5"] == table["dense"]["10"]  # the dense path has no beam


def test_search_settings_agree_with_the_rules_scored_one_search_at_a_time(trained_run):
    experiments = load_script()
    result = experiments.search_settings(trained_run, [["search.beam_size=5"],
                                                       ["search.beam_size=5", "search.fusion_weight=20"]])
    plain, fused = result["by_setting"]
    alone = experiments.beam_widths(trained_run, [5])["by_rule_and_width"]
    for rule in ("lexicographic", "fused"):  # the configured fusion weight is 1.0
        assert plain[rule]["ndcg@10"] == alone[rule]["5"]
    assert fused["lexicographic"] == plain["lexicographic"]  # the fusion weight moves the fused rule only
    assert all(0.0 <= row[rule]["B4_hit@10"] <= 1.0 for row in (plain, fused) for rule in ("lexicographic", "fused", "rerank"))


def test_level_recall_of_the_decoder_at_level_one_is_the_beams_level_one_recall(trained_run):
    import torch

    from dgi.evaluation.evaluate import batches
    from dgi.training.validation import prefix_recall

    experiments = load_script()
    _, corpus, retriever = experiments._trained(trained_run)
    rows, history, queries, has_query = next(batches(corpus, "valid", 40, 40))
    targets = retriever.index.codes[torch.from_numpy(corpus.splits["valid"].targets[rows])].long()
    with torch.no_grad():
        context = retriever.context(history, queries, has_query)
        levels = experiments.level_scores(retriever, context, targets)
        kept = prefix_recall(retriever.beams(context, 2), targets)[:, 0]
    first = levels[0]["decoder"]
    in_top_two = (first > first.gather(1, targets[:, :1])).sum(1) < 2
    assert torch.equal(in_top_two, kept)
    for j, scores in enumerate(levels):  # the target is always a valid child of its own prefix
        for score in scores.values():
            assert torch.isfinite(score.gather(1, targets[:, j:j + 1])).all()
    result = experiments.level_recall(trained_run, ks=(1, 5))["by_scorer"]
    for scorer in ("decoder", "geometry", "dense"):
        one, five = result[scorer]["recall@1"]["overall"], result[scorer]["recall@5"]["overall"]
        assert all(0.0 <= a <= b <= 1.0 for a, b in zip(one, five))


def test_search_settings_score_every_rule_per_setting_and_one_scale_on_every_level_changes_nothing(trained_run):
    experiments = load_script()
    result = experiments.search_settings(trained_run, [[], ["search.level_weights=[2,2,2]"],
                                                       ["search.level_weights=[1,0.1,0.1]"]])
    plain, scaled, weighted = result["by_setting"]
    assert result["split"] == "valid" and scaled["overrides"] == ["search.level_weights=[2,2,2]"]
    for key in ("beam_recall", "lexicographic", "rerank"):  # fused adds a cosine to the scaled beam score
        assert plain[key] == scaled[key]
    width = str(yaml.safe_load((trained_run / "config.yaml").read_text())["search"]["beam_size"])
    alone = experiments.beam_widths(trained_run, [int(width)])["by_rule_and_width"]
    assert plain["lexicographic"]["ndcg@10"] == alone["lexicographic"][width]
    assert len(weighted["beam_recall"]) == 3 and all(0.0 <= v <= 1.0 for v in weighted["beam_recall"])
