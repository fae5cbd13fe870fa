"""The trainable text backbone (model.text_encoder=trainable): the real packaged MiniLM, fine-tuned on CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dgi import pipeline
from dgi.data.encoders import SentenceTransformerEncoder
from dgi.nets.backbone import FreshText, TextBackbone
from dgi.retriever import Retriever

TEXTS = ["red crackle nail polish", "a moisturising day cream for dry skin with spf 30", "shampoo"]


@pytest.fixture(scope="module")
def backbone() -> TextBackbone:
    return TextBackbone(max_length=32)


def test_backbone_embeds_like_the_frozen_encoder_before_training(backbone):
    ours = backbone.encode(TEXTS)
    frozen = SentenceTransformerEncoder().encode(TEXTS)
    assert ours.shape == (3, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, frozen, atol=1e-5)  # these texts fit in 32 tokens


def test_tokens_are_capped_and_rows_trimmed_to_their_longest_text():
    short = TextBackbone(max_length=6, checkpointing=False)
    tokens = short.tokenize(TEXTS)
    assert tokens.ids.shape == (3, 6)
    lengths = tokens.mask.sum(dim=1).tolist()
    assert lengths[:2] == [6, 6] and lengths[2] < 6  # the long texts are cut, "shampoo" is not
    assert tokens.rows(torch.tensor([2])).ids.shape == (1, lengths[2])


def test_fresh_rows_carry_gradients_to_the_backbone_and_others_keep_their_vectors(backbone):
    tokens = backbone.tokenize(TEXTS)
    table = torch.zeros(3, 384)
    queries = torch.ones(2, 384)
    fresh = FreshText(torch.tensor([1]), tokens.rows(torch.tensor([1])), torch.tensor([0]),
                      tokens.rows(torch.tensor([0])))
    backbone.train()
    items, query_table = fresh.tables(backbone, table, queries)
    assert torch.equal(items[[0, 2]], table[[0, 2]]) and torch.equal(query_table[1], queries[1])
    assert torch.allclose(items[1].norm(), torch.tensor(1.0), atol=1e-5)
    (items.sum() + query_table.sum()).backward()
    layer = backbone.encoder[0].auto_model.encoder.layer[0].attention.self.query.weight
    assert layer.grad is not None and layer.grad.abs().sum() > 0
    backbone.zero_grad(set_to_none=True)


def test_a_run_fine_tunes_the_backbone_and_its_model_directory_embeds_with_it(tiny_config, tiny_corpus, tmp_path):
    config = tiny_config.model_copy(deep=True)
    config.model.text_encoder = "trainable"
    config.encoder.max_length = 16
    config.train.batch_size = 16
    config.train.max_steps_per_epoch = 4
    config.train.joint_epochs = 1
    config.train.backbone_lr = 1e-4
    config.train.eval_examples = 40
    run = pipeline.train(config, tmp_path / "run", tiny_corpus, progress=False)

    records = [json.loads(line) for line in run.log_file.read_text().splitlines()]
    assert [r["phase"] for r in records] == ["dense", "joint"]
    assert all(len(r["step_loss"]) == 4 for r in records)  # max_steps_per_epoch
    assert all(r["text_refresh_seconds"] > 0 for r in records)

    base = TextBackbone(max_length=16, checkpointing=False)
    model = pipeline.load_trained(run).model
    name = next(key for key in base.state_dict() if key.endswith("layer.0.attention.self.query.weight"))
    changed = (model.text_backbone.state_dict()[name] - base.state_dict()[name]).abs().max()
    assert changed > 0  # the backbone was trained, and its weights are in the checkpoint

    served = Retriever.load(run.model_dir)  # self-contained: the fine-tuned backbone is in the weights
    assert served.encoder.name.endswith("(fine-tuned by dgi)")
    text = [tiny_corpus.dataset.items[0].text]
    np.testing.assert_allclose(served.encoder.encode(text), model.text_backbone.encode(text), atol=1e-5)
    assert not np.allclose(served.encoder.encode(text), base.encode(text), atol=1e-4)
    report = pipeline.evaluate_run(run.path, "valid", tmp_path / "eval", limit=40, corpus=tiny_corpus)
    assert report["n_examples"] == 40 and 0 <= report["methods"]["dense"]["overall"]["ndcg@10"] <= 1


def test_trainable_text_refuses_a_corpus_without_its_query_texts(tiny_config, tiny_corpus):
    from dataclasses import replace

    from dgi.training.text import TrainableText

    with pytest.raises(ValueError, match="query texts"):
        TrainableText.of(TextBackbone(max_length=8, checkpointing=False), replace(tiny_corpus, query_texts=[]))
