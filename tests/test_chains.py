"""Causal context encoder and chains of prefix examples: one pass per chain gives every example's own context."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dgi.config import load_config
from dgi.nets.model import Batch, DGIModel
from dgi.training.chains import Chains

TEXT_DIM, N_ITEMS, N_QUERIES, SLOTS = 24, 40, 6, 8


def causal_model(dropout: float = 0.0) -> tuple[DGIModel, torch.Tensor, torch.Tensor]:
    config = load_config([], ["model.width=16", "model.attention_heads=2", f"model.dropout={dropout}",
                              "model.context_attention=causal", f"data.max_history={SLOTS}",
                              "quantizer.codebook_sizes=[8,8,8]"])
    torch.manual_seed(0)
    model = DGIModel(config, TEXT_DIM, [8, 8, 8], N_ITEMS)
    items = torch.nn.functional.normalize(torch.randn(N_ITEMS, TEXT_DIM), dim=-1)
    queries = torch.nn.functional.normalize(torch.randn(N_QUERIES, TEXT_DIM), dim=-1)
    with torch.no_grad():
        for parameter in model.parameters():  # non-zero blocks, positions and ID vectors: a trained-like model
            parameter.add_(torch.randn_like(parameter) * 0.1)
        model.quantizer.kmeans_init(model.item_vectors(items), iterations=5, seed=0)
    return model, items, queries


def prefix_examples(sequences: list[list[int]], queries: dict[int, int] | None = None) -> tuple[torch.Tensor, ...]:
    """Every prefix of each sequence as an example (targets, left-padded history, query ids), a
    sequential dataset's training split; `queries` gives some example rows a query."""
    targets, histories = [], []
    for sequence in sequences:
        for t in range(1, len(sequence)):
            kept = sequence[max(0, t - SLOTS):t]
            targets.append(sequence[t])
            histories.append([-1] * (SLOTS - len(kept)) + kept)
    query_ids = torch.full((len(targets),), -1, dtype=torch.long)
    for row, query in (queries or {}).items():
        query_ids[row] = query
    return torch.tensor(targets), torch.tensor(histories), query_ids


def test_chains_link_prefixes_and_leave_query_and_full_windows_alone():
    long = list(range(12))  # 11 examples; from history length SLOTS on they are sliding windows
    targets, history, query_ids = prefix_examples([[20, 21, 22, 23], long, [30, 31]], queries={1: 3})
    chains = Chains.of(targets, history, query_ids)
    members = [chains.members[a:b].tolist() for a, b in zip(chains.offsets[:-1], chains.offsets[1:])]
    # row 1 has a query: rows 0 and 2 cannot be linked through it; the long sequence's rows 3..10 are one
    # chain (history lengths 1..8), then each full window (lengths 8) starts its own
    assert members == [[0], [1], [2], [3, 4, 5, 6, 7, 8, 9, 10], [11], [12], [13], [14]]
    assert sorted(chains.members.tolist()) == list(range(len(targets)))
    assert chains.lengths.tolist() == [1, 2, 3, 8, 8, 8, 8, 1]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(2, 14), min_size=1, max_size=12), st.integers(2, 9), st.integers(1, 4),
       st.integers(0, 2**16))
def test_batches_keep_chains_whole_and_sequence_of_names_each_run_end(lengths, batch_size, pool, seed):
    generator = torch.Generator().manual_seed(seed)
    sequences = [torch.randint(0, N_ITEMS, (n,), generator=generator).tolist() for n in lengths]
    chains = Chains.of(*prefix_examples(sequences))
    batches = chains.batches(batch_size, pool, generator)
    order = torch.cat(batches)
    assert sorted(order.tolist()) == list(range(len(chains.parent)))
    assert all(len(batch) == batch_size for batch in batches if len(batch) != len(order) % batch_size)
    for batch in batches:
        sequence_of = chains.sequence_of(batch)
        for i, end in enumerate(sequence_of.tolist()):
            assert end >= i and sequence_of[end] == end
            run = batch[i:end + 1]  # consecutive chain members: each extends the one before it
            assert all(chains.parent[b] == a for a, b in zip(run[:-1].tolist(), run[1:].tolist()))
    chain_of = torch.empty(len(order), dtype=torch.long)
    chain_of[chains.members] = torch.repeat_interleave(torch.arange(len(chains.sizes)), chains.sizes)
    for batch in batches:  # each chain's members in a batch: one consecutive run, oldest first
        for chain in chain_of[batch].unique().tolist():
            at = (chain_of[batch] == chain).nonzero().flatten()
            assert torch.equal(at, torch.arange(int(at[0]), int(at[0]) + len(at)))
            assert torch.equal(batch[at], batch[at].sort().values) or \
                all(chains.parent[b] == a for a, b in zip(batch[at][:-1].tolist(), batch[at][1:].tolist()))


def per_example_and_chained(model: DGIModel, items, queries, batch: Batch, chains: Chains):
    rows = batch.rows
    chained = Batch(batch.targets, batch.history, batch.query_ids, rows=rows, sequence_of=chains.sequence_of(rows))
    return model.batch_context(batch, items, queries), model.batch_context(chained, items, queries), chained


def test_chained_contexts_equal_encoding_every_example_alone():
    model, items, queries = causal_model()
    model.eval()
    sequences = [[1, 5, 9, 2, 7], list(range(10, 22)), [3, 4], [8, 6, 1]]
    targets, history, query_ids = prefix_examples(sequences, queries={5: 2})
    chains = Chains.of(targets, history, query_ids)
    rows = chains.batches(len(targets), 1, torch.Generator().manual_seed(0))[0]
    batch = Batch(targets[rows], history[rows], query_ids[rows], rows=rows)
    alone, chained, chained_batch = per_example_and_chained(model, items, queries, batch, chains)
    assert (chained_batch.sequence_of != torch.arange(len(rows))).sum() >= 9  # half the rows read another row's pass
    torch.testing.assert_close(chained.vector, alone.vector, atol=1e-5, rtol=1e-5)
    # each example's real slots hold the states of encoding it alone, in order; the decoder reads just those
    assert torch.equal((~chained.padding).sum(dim=1), (~alone.padding).sum(dim=1))
    torch.testing.assert_close(chained.memory[chained.sequence][~chained.padding], alone.memory[~alone.padding],
                               atol=1e-5, rtol=1e-5)
    codes = model.quantizer.encode(model.catalog_vectors(items))[batch.targets]
    vectors = model.quantizer.codewords(codes)
    for a, b in zip(model.level_logits(alone, vectors), model.level_logits(chained, vectors)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_chained_next_token_losses_and_gradients_match_per_example():
    model, items, queries = causal_model()
    targets, history, query_ids = prefix_examples([[1, 5, 9, 2, 7, 11], list(range(10, 20))])
    chains = Chains.of(targets, history, query_ids)
    rows = chains.batches(len(targets), 1, torch.Generator().manual_seed(0))[0]
    plain = Batch(targets[rows], history[rows], query_ids[rows], rows=rows)
    chained = Batch(*plain.__dict__.values())
    chained.sequence_of = chains.sequence_of(rows)
    model.train()  # dropout is 0: training mode differs only in the attention path
    results = []
    for batch in (plain, chained):
        torch.manual_seed(5)  # the same sampled negatives
        model.zero_grad(set_to_none=True)
        output = model.losses(batch, items, queries, tau=1.0, generative=True)
        output.terms["ntp"].backward()  # InfoNCE differs by design: a chain's other targets are no negatives
        results.append(({k: v.detach() for k, v in output.terms.items() if k != "infonce"},
                        model.context_encoder.positions.grad.clone(), model.item_tower.linear.weight.grad.clone()))
    (terms_a, positions_a, tower_a), (terms_b, positions_b, tower_b) = results
    for name in terms_a:
        torch.testing.assert_close(terms_b[name], terms_a[name], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(positions_b, positions_a, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(tower_b, tower_a, atol=1e-5, rtol=1e-4)


def test_causal_state_depends_on_its_prefix_alone():
    model, items, queries = causal_model()
    model.eval()
    table = model.catalog_vectors(items)
    history = torch.tensor([[-1, -1, -1, -1, 3, 8, 1, 4], [-1, -1, -1, -1, 3, 8, 1, 9]])
    context = model.encode_context(history, None, torch.zeros(2, dtype=torch.bool), table)
    # the slots before the last item see the same items in both rows: equal states; the last differs
    torch.testing.assert_close(context.memory[0, :-2], context.memory[1, :-2])
    assert not torch.allclose(context.memory[0, -2], context.memory[1, -2])


def test_prefixes_refuse_a_bidirectional_encoder():
    config = load_config([], ["model.width=16", "model.attention_heads=2", "quantizer.codebook_sizes=[8,8,8]"])
    model = DGIModel(config, TEXT_DIM, [8, 8, 8], N_ITEMS)
    context = model.encode_context(torch.tensor([[1, 2]]), None, torch.zeros(1, dtype=torch.bool),
                                   model.catalog_vectors(torch.randn(N_ITEMS, TEXT_DIM)))
    with pytest.raises(ValueError, match="causal"):
        model.context_encoder.prefixes(context, torch.tensor([0]), torch.tensor([1]))


def test_contiguous_shards_cover_a_batch_in_blocks():
    from dgi.training.distributed import ProcessGroup

    rows = torch.arange(11)
    shards = [ProcessGroup(rank, 3).shard(rows, contiguous=True) for rank in range(3)]
    assert [s.tolist() for s in shards] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert ProcessGroup(1, 3).shard(rows).tolist() == [1, 4, 7, 10]


def test_causal_training_runs_end_to_end(tiny_config, tiny_corpus, tmp_path):
    from dgi.training.run import RunDirectory
    from dgi.training.trainer import Trainer

    config = tiny_config.model_copy(deep=True)
    config.model.context_attention = "causal"
    config.train.dense_epochs, config.train.joint_epochs = 1, 1
    trainer = Trainer(config, tiny_corpus, RunDirectory(tmp_path), progress=False)
    assert trainer.chains is not None and len(trainer.chains.sizes) < len(trainer.chains.parent)
    state = trainer.fit()
    assert state["best_epoch"] == 2 and state["best_score"] is not None


def test_info_nce_groups_drop_a_users_other_targets_from_its_negatives():
    from dgi.nets.losses import info_nce

    torch.manual_seed(0)
    context = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    targets = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    negatives = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    ids, negative_ids = torch.arange(5), torch.arange(10, 13)
    groups = torch.tensor([0, 0, 0, 3, 4])  # rows 0-2: one user's chain
    grouped = info_nce(context, targets, ids, 0.1, negatives, negative_ids, groups=groups)
    by_hand = []
    for row in range(5):
        keep = [c for c in range(5) if c == row or groups[c] != groups[row]]
        logits = torch.cat([context[row] @ targets[keep].T, context[row] @ negatives.T]) / 0.1
        by_hand.append(torch.nn.functional.cross_entropy(logits[None], torch.tensor([keep.index(row)])))
    torch.testing.assert_close(grouped, torch.stack(by_hand).mean())
    assert not torch.allclose(grouped, info_nce(context, targets, ids, 0.1, negatives, negative_ids))
