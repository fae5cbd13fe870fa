"""The method's mechanisms: gradients through the quantizer, weight sharing, cosine geometry."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dgi.config import load_config
from dgi.nets import losses
from dgi.nets.geometry import assignment_logits, similarity_logits
from dgi.nets.model import Batch, DGIModel

TEXT_DIM, N_ITEMS, N_QUERIES = 24, 50, 10


def make_model(*overrides: str) -> DGIModel:
    config = load_config([], ["model.width=16", "model.attention_heads=2", "model.dropout=0",
                              "quantizer.codebook_sizes=[8,8,8]", *overrides])
    torch.manual_seed(0)
    model = DGIModel(config, TEXT_DIM, [8, 8, 8])
    items = torch.nn.functional.normalize(torch.randn(N_ITEMS, TEXT_DIM), dim=-1)
    with torch.no_grad():
        model.quantizer.kmeans_init(model.item_vectors(items), iterations=5, seed=0)
        if model.config.quantizer.gradient == "frozen":
            model.frozen_codes = model.quantizer.encode(model.item_vectors(items))
            model.quantizer.requires_grad_(False)
    return model, items


def random_batch(batch_size: int = 12) -> Batch:
    generator = torch.Generator().manual_seed(1)
    history = torch.randint(0, N_ITEMS, (batch_size, 20), generator=generator)
    history[:, :10] = -1
    query_ids = torch.randint(-1, N_QUERIES, (batch_size,), generator=generator)
    return Batch(torch.randperm(N_ITEMS, generator=generator)[:batch_size], history, query_ids)


def ntp_gradients(model: DGIModel, items: torch.Tensor) -> dict[str, torch.Tensor | None]:
    queries = torch.nn.functional.normalize(torch.randn(N_QUERIES, TEXT_DIM), dim=-1)
    model.train()
    model.zero_grad(set_to_none=True)
    terms = model.losses(random_batch(), items, queries, tau=1.0, generative=True).terms
    terms["ntp"].backward()
    return {
        "codebooks": model.quantizer.codebooks[0].grad,
        "item_tower": model.item_tower.linear.weight.grad,
    }


def test_gumbel_ntp_alone_reaches_codebooks_and_item_tower():
    model, items = make_model("quantizer.gradient=gumbel")
    grads = ntp_gradients(model, items)
    assert grads["codebooks"] is not None and grads["codebooks"].abs().sum() > 0
    assert grads["item_tower"] is not None and grads["item_tower"].abs().sum() > 0


def test_straight_through_ntp_also_reaches_codebooks():
    model, items = make_model("quantizer.gradient=ste")
    grads = ntp_gradients(model, items)
    assert grads["codebooks"].abs().sum() > 0 and grads["item_tower"].abs().sum() > 0


def test_frozen_ntp_reaches_neither_codebooks_nor_item_tower_through_the_codes():
    model, items = make_model("quantizer.gradient=frozen")
    grads = ntp_gradients(model, items)
    assert grads["codebooks"] is None
    # the item tower still gets gradient through the history tokens of the context, never through targets:
    model.zero_grad(set_to_none=True)
    batch = random_batch()
    batch.history[:] = -1
    batch.query_ids[:] = 0
    queries = torch.nn.functional.normalize(torch.randn(N_QUERIES, TEXT_DIM), dim=-1)
    model.losses(batch, items, queries, tau=1.0, generative=True).terms["ntp"].backward()
    grad = model.item_tower.linear.weight.grad
    assert grad is None or not grad.any()


def test_tied_heads_are_the_codebook_tensors_and_untied_are_not():
    tied, _ = make_model("quantizer.heads=tied")
    for level in range(3):
        assert tied.heads.weight(level, tied.quantizer.codebooks) is tied.quantizer.codebooks[level]
    assert not any(name.startswith("heads.own") for name, _ in tied.named_parameters())
    untied, _ = make_model("quantizer.heads=untied")
    for level in range(3):
        assert untied.heads.weight(level, untied.quantizer.codebooks) is not untied.quantizer.codebooks[level]


def test_cosine_logits_ignore_item_norms_and_dot_logits_do_not():
    torch.manual_seed(0)
    hidden, weight = torch.randn(5, 16), torch.randn(7, 16)
    scales = torch.rand(7, 1) * 10 + 0.1
    scale = torch.tensor(30.0)
    assert torch.allclose(similarity_logits(hidden, weight, "cosine", scale),
                          similarity_logits(hidden, weight * scales, "cosine", scale), atol=1e-5)
    assert not torch.allclose(similarity_logits(hidden, weight, "dot"), similarity_logits(hidden, weight * scales, "dot"))
    residual = torch.randn(5, 16)
    assert torch.equal(assignment_logits(residual, weight, "cosine", scale).argmax(1),
                       assignment_logits(residual, weight * scales, "cosine", scale).argmax(1))


def test_cosine_gradient_has_no_radial_component():
    """Weight normalization: the update cannot grow a popular item's norm (Riemannian SGD on the sphere)."""
    torch.manual_seed(0)
    weight = torch.randn(7, 16, requires_grad=True)
    logits = similarity_logits(torch.randn(32, 16), weight, "cosine", torch.tensor(30.0))
    torch.nn.functional.cross_entropy(logits, torch.zeros(32, dtype=torch.long)).backward()
    radial = (weight.grad * weight.detach()).sum(dim=1)
    assert torch.allclose(radial, torch.zeros(7), atol=1e-4)


@pytest.mark.parametrize("gradient", ["gumbel", "ste", "frozen"])
def test_every_loss_term_is_finite(gradient):
    model, items = make_model(f"quantizer.gradient={gradient}")
    queries = torch.nn.functional.normalize(torch.randn(N_QUERIES, TEXT_DIM), dim=-1)
    terms = model.losses(random_batch(), items, queries, tau=0.5, generative=True).terms
    expected = {"infonce", "ntp"} | ({"global", "local", "diversity"} if gradient != "frozen" else set())
    assert set(terms) == expected
    assert all(torch.isfinite(value) for value in terms.values())


def test_residual_decoder_starts_at_the_quantized_context_vector():
    """Zero-initialized decoder blocks + residual inputs: step j scores codes like the quantizer would."""
    model, items = make_model("model.decoder_inputs=residual")
    model.eval()
    with torch.no_grad():
        context = model.encode_context(torch.full((4, 20), -1), torch.randn(4, TEXT_DIM), torch.ones(4, dtype=bool), model.catalog_vectors(items))
        codes = model.quantizer.encode(context.vector)
        for level in range(3):
            step = model.step_log_probs(context, codes[:, None, :level])[:, 0]
            assert torch.equal(step.argmax(-1), codes[:, level])


def test_step_log_probs_match_teacher_forced_logits():
    model, items = make_model()
    model.eval()
    with torch.no_grad():
        context = model.encode_context(torch.randint(0, N_ITEMS, (3, 20)), None, torch.zeros(3, dtype=bool), model.catalog_vectors(items))
        codes = model.quantizer.encode(model.item_vectors(items[:3]))
        forced = model.level_logits(context, model.quantizer.codewords(codes))
        for level in range(3):
            step = model.step_log_probs(context, codes[:, None, :level])[:, 0]
            assert torch.allclose(step, torch.log_softmax(forced[level], -1), atol=1e-5)


def test_item_id_vectors_start_at_zero_and_skip_items_added_later():
    config = load_config([], ["model.width=16", "model.attention_heads=2", "model.item_id_embeddings=true",
                              "quantizer.codebook_sizes=[8,8,8]"])
    torch.manual_seed(0)
    model = DGIModel(config, TEXT_DIM, [8, 8, 8], n_items=N_ITEMS)
    items = torch.nn.functional.normalize(torch.randn(N_ITEMS + 2, TEXT_DIM), dim=-1)
    assert torch.allclose(model.catalog_vectors(items), model.item_vectors(items))
    with torch.no_grad():
        model.item_id_embedding.weight.normal_()
    with_ids = model.catalog_vectors(items)
    assert not torch.allclose(with_ids[:N_ITEMS], model.item_vectors(items[:N_ITEMS]))
    assert torch.allclose(with_ids[N_ITEMS:], model.item_vectors(items[N_ITEMS:]))  # unknown to the table
    assert torch.allclose(with_ids.norm(dim=-1), torch.ones(N_ITEMS + 2))


def test_batch_item_vectors_match_one_tower_call_per_slot_values_and_gradients():
    """Each distinct item through the tower once gives the per-slot vectors and the same gradients."""
    config = load_config([], ["model.width=16", "model.attention_heads=2", "model.item_id_embeddings=true"])
    model = DGIModel(config, TEXT_DIM, [8, 8, 8], n_items=N_ITEMS)
    with torch.no_grad():
        model.item_id_embedding.weight.normal_()
    items = torch.nn.functional.normalize(torch.randn(N_ITEMS, TEXT_DIM), dim=-1)
    ids = torch.tensor([[-1, 3, 3, 7], [-1, -1, 7, 0]])
    targets = torch.tensor([3, 9])
    table, (history, target_rows) = model.batch_item_vectors(items, ids, targets)
    assert torch.equal(history == -1, ids == -1) and len(table) == 4  # items 0, 3, 7, 9
    per_slot = model.item_vectors(items[ids.clamp(min=0)], ids.clamp(min=0)) * (ids >= 0)[..., None]
    deduplicated = table[history.clamp(min=0)] * (history >= 0)[..., None]
    assert torch.allclose(deduplicated, per_slot, atol=1e-6)
    assert torch.allclose(table[target_rows], model.item_vectors(items[targets], targets), atol=1e-6)
    weight = model.item_tower.linear.weight
    (grad_slots,) = torch.autograd.grad(per_slot.square().sum(), weight)
    (grad_table,) = torch.autograd.grad(deduplicated.square().sum(), weight)
    assert torch.allclose(grad_slots, grad_table, atol=1e-5)


def test_context_ignores_history_columns_that_are_padding_in_every_row():
    model, items = make_model()
    model.eval()
    vectors = model.catalog_vectors(items)
    history = torch.randint(0, N_ITEMS, (5, 20))
    history[:, :12] = -1
    history[0, 12:15] = -1  # a shorter row: its own padding stays
    with torch.no_grad():
        trimmed = model.encode_context(history, None, torch.zeros(5, dtype=bool), vectors)
        padded = model.context_encoder(vectors[history.clamp(min=0)] * (history >= 0)[..., None], history >= 0,
                                       torch.zeros(5, 16), torch.zeros(5, dtype=bool))
    assert torch.allclose(trimmed.vector, padded.vector, atol=1e-5)


def test_a_step_with_the_precomputed_decoder_memory_equals_one_without():
    model, items = make_model()
    model.eval()
    queries = torch.nn.functional.normalize(torch.randn(N_QUERIES, TEXT_DIM), dim=-1)
    batch = random_batch(6)
    with torch.no_grad():
        context = model.batch_context(batch, items, queries)
        memory = model.decoder.memory(context.memory, context.padding)
        prefix = torch.randint(0, 8, (6, 4, 2))
        assert torch.equal(model.step_log_probs(context, prefix, memory), model.step_log_probs(context, prefix))


@pytest.mark.parametrize("inputs,target", [("residual", "codeword"), ("codewords", "codeword"), ("residual", "prefix")])
def test_incremental_beam_steps_equal_full_steps_through_a_search(inputs, target):
    from dgi.search.beam import beam_search
    from dgi.search.index import SIDIndex

    model, items = make_model(f"model.decoder_inputs={inputs}", "model.decoder_layers=2",
                              f"quantizer.head_target={target}")
    for block in model.decoder.blocks:  # zero-initialised branches would make every block the identity
        for parameter in block.parameters():
            torch.nn.init.normal_(parameter, std=0.3)
    model.eval()
    queries = torch.nn.functional.normalize(torch.randn(N_QUERIES, TEXT_DIM), dim=-1)
    batch = random_batch(6)
    index = SIDIndex.build(torch.randint(0, 8, (300, 3), generator=torch.Generator().manual_seed(2)), [8, 8, 8])
    with torch.no_grad():
        context = model.batch_context(batch, items, queries)
        memory = model.decoder.memory(context.memory, context.padding)
        full = beam_search(lambda prefix, _: model.step_log_probs(context, prefix, memory), 6, index, 5)
        fast = beam_search(model.incremental_steps(context, memory), 6, index, 5)
    assert torch.equal(full.codes, fast.codes)
    assert torch.allclose(full.scores, fast.scores, atol=1e-5)


def test_prefix_heads_of_a_fresh_decoder_score_each_partial_sid_by_the_contexts_cosine_to_it():
    """quantizer.head_target=prefix with residual inputs and zero-initialised blocks: the level-j logit of
    code k is gamma * cos(context, codewords chosen so far + codeword k), the dense path's geometry."""
    import torch.nn.functional as F

    model, items = make_model("quantizer.head_target=prefix")
    model.eval()
    queries = F.normalize(torch.randn(N_QUERIES, TEXT_DIM), dim=-1)
    batch = random_batch(5)
    with torch.no_grad():
        context = model.batch_context(batch, items, queries)
        codes = torch.randint(0, 8, (5, 3))
        logits = model.level_logits(context, model.quantizer.codewords(codes))
        chosen = torch.zeros(5, 16)
        for level, codebook in enumerate(model.quantizer.codebooks):
            points = chosen[:, None, :] + codebook[None]  # [B, K, d]: every extension of the prefix
            expected = model.heads.scales[level]() * F.cosine_similarity(context.vector[:, None], points, dim=-1)
            assert torch.allclose(logits[level], expected, atol=1e-4)
            chosen = chosen + codebook[codes[:, level]]


def test_prefix_heads_need_tied_cosine_heads():
    from dgi.config import ConfigError

    with pytest.raises(ConfigError, match="head_target=prefix"):
        load_config([], ["quantizer.head_target=prefix", "quantizer.heads=untied"])


def reference_dense_code_targets(item_logits: torch.Tensor, item_codes: torch.Tensor, codes: torch.Tensor,
                                 sizes: list[int]) -> list[torch.Tensor]:
    """Slow and obvious: per example, level and code, the softmax mass of the items under prefix + code."""
    probs = torch.softmax(item_logits.double(), dim=-1)
    targets = [torch.zeros(len(codes), size, dtype=torch.float64) for size in sizes]
    for row in range(len(codes)):
        for level, size in enumerate(sizes):
            under = [i for i in range(len(item_codes))
                     if all(item_codes[i, j] == codes[row, j] for j in range(level))]
            total = sum(probs[row, i] for i in under)
            for i in under:
                targets[level][row, item_codes[i, level]] += probs[row, i] / total
    return targets


@settings(max_examples=25, deadline=None)
@given(n_items=st.integers(1, 30), batch=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_dense_code_targets_match_the_reference(n_items, batch, seed):
    generator = torch.Generator().manual_seed(seed)
    sizes = [3, 2, 4]
    item_codes = torch.stack([torch.randint(0, k, (n_items,), generator=generator) for k in sizes], dim=1)
    targets = torch.randint(0, n_items, (batch,), generator=generator)
    item_logits = 3 * torch.randn(batch, n_items, generator=generator)
    fast = losses.dense_code_targets(item_logits, item_codes, item_codes[targets], sizes)
    slow = reference_dense_code_targets(item_logits, item_codes, item_codes[targets], sizes)
    for level, (f, s) in enumerate(zip(fast, slow)):
        torch.testing.assert_close(f.double(), s, atol=1e-6, rtol=1e-5, msg=f"level {level}")
        assert bool((f[torch.arange(batch), item_codes[targets, level]] > 0).all())  # the target's own code


def decoder_phase_ntp(share: float) -> tuple[torch.Tensor, torch.Tensor]:
    model, items = make_model("train.decoder_epochs=1", f"loss.ntp_dense_targets={share}")
    with torch.no_grad():
        model.frozen_codes = model.quantizer.encode(model.catalog_vectors(items))
    queries = torch.nn.functional.normalize(torch.randn(N_QUERIES, TEXT_DIM), dim=-1)
    model.train_decoder_only()
    result = model.decoder_losses(random_batch(), items, queries)
    return result.terms["ntp"], result.next_token.loss.mean()


def test_dense_targets_leave_the_one_hot_loss_at_share_zero_and_raise_it_above():
    plain, logged = decoder_phase_ntp(0.0)
    torch.testing.assert_close(plain, logged)  # share 0: the trained loss is the plain cross-entropy
    mixed, logged_mixed = decoder_phase_ntp(0.5)
    torch.testing.assert_close(logged_mixed, logged)  # the logged loss stays the plain one
    assert mixed.item() != pytest.approx(plain.item())  # soft targets change what is trained
    mixed.backward()  # and they carry gradient to the decoder


def test_dense_targets_need_a_decoder_phase():
    with pytest.raises(Exception, match="ntp_dense_targets"):
        load_config([], ["loss.ntp_dense_targets=0.5"])
