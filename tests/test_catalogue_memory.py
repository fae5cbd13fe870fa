"""What search holds per item: float16 item vectors and codes in the smallest integer type, same answers."""

from __future__ import annotations

import torch

from dgi import pipeline
from dgi.retriever import Retriever
from dgi.search.index import SIDIndex, code_dtype
from dgi.training.run import RunDirectory


def _half(retriever: Retriever) -> Retriever:
    search = retriever.search_config.model_copy(update={"item_vectors": "float16"})
    return Retriever(retriever.model, retriever.index, retriever.item_vectors, retriever.item_ids,
                     retriever.item_texts, search)


def test_codes_and_bucket_ids_are_stored_in_the_smallest_type_and_answer_as_before():
    codes = torch.randint(0, 256, (500, 3), generator=torch.Generator().manual_seed(0))
    index = SIDIndex.build(codes, [256, 256, 256])
    assert index.codes.dtype == torch.int16 and code_dtype([40000]) == torch.int32
    assert torch.equal(index.codes.long(), codes)
    items, offsets = index.items_of(codes[:20])
    assert items.dtype == torch.long
    assert all(i in items[offsets[i]:offsets[i + 1]].tolist() for i in range(20))


def test_float16_item_vectors_halve_the_catalogue_and_keep_the_rankings(trained_run, tiny_corpus):
    full = pipeline.load_trained(RunDirectory(trained_run), tiny_corpus)
    half = _half(full)
    assert half.item_vectors.dtype == torch.float16
    assert half.item_vectors.nbytes * 2 == full.item_vectors.nbytes
    split = tiny_corpus.splits["valid"]
    history = torch.as_tensor(split.history[:100])
    queries = tiny_corpus.query_embeddings[torch.as_tensor(split.query_ids[:100]).clamp(min=0)]
    has_query = torch.as_tensor(split.query_ids[:100]) >= 0
    dense_full = full.dense(history, queries, has_query, 10)[0]
    dense_half = half.dense(history, queries, has_query, 10)[0]
    assert (dense_full[:, 0] == dense_half[:, 0]).float().mean() > 0.95
    overlap = [len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(dense_full, dense_half)]
    assert sum(overlap) / len(overlap) > 0.95
    for rule in ("lexicographic", "rerank"):
        top_full = full.generate(history, queries, has_query, 10, rule).items[:, 0]
        top_half = half.generate(history, queries, has_query, 10, rule).items[:, 0]
        assert (top_full == top_half).float().mean() > 0.95


def test_dense_search_in_chunks_is_exact(trained_run, tiny_corpus):
    retriever = pipeline.load_trained(RunDirectory(trained_run), tiny_corpus)
    split = tiny_corpus.splits["valid"]
    context = retriever.context(torch.as_tensor(split.history[:50]), None, torch.zeros(50, dtype=torch.bool))
    whole_items, whole_scores = retriever.dense_from_context(context, 10)
    chunk_items, chunk_scores = retriever.dense_from_context(context, 10, chunk=37)
    assert torch.allclose(whole_scores, chunk_scores, atol=1e-6)
    assert (whole_items == chunk_items).float().mean() > 0.99  # ties may swap
