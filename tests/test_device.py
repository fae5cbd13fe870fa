"""Precision: bf16 autocast only where native, with assignments and scaled logits kept in fp32."""

from __future__ import annotations

import torch

from dgi.config import load_config
from dgi.device import autocast, autocast_dtype, cpu_has_native_bf16, full_precision
from dgi.nets.geometry import similarity_logits
from dgi.nets.model import Batch, DGIModel


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    with_amx, without = tmp_path / "amx", tmp_path / "avx2"
    with_amx.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 amx_bf16 amx_tile\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert cpu_has_native_bf16(with_amx) and not cpu_has_native_bf16(without)
    assert not cpu_has_native_bf16(tmp_path / "missing")


def test_precision_setting():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "fp32") is None and autocast_dtype(cpu, "bf16") == torch.bfloat16
    assert autocast_dtype(cpu, "auto") == (torch.bfloat16 if cpu_has_native_bf16() else None)


def test_scaled_logits_stay_fp32_under_bf16_autocast():
    hidden, weight = torch.randn(4, 16), torch.randn(8, 16)
    with autocast(torch.device("cpu"), torch.bfloat16):
        assert (hidden @ weight.T).dtype == torch.bfloat16  # autocast is on
        logits = similarity_logits(hidden, weight, "cosine", torch.tensor(30.0))
        doubled = full_precision(lambda x: x * 2)(hidden.bfloat16())
    assert logits.dtype == torch.float32 and doubled.dtype == torch.float32
    assert torch.allclose(logits, similarity_logits(hidden, weight, "cosine", torch.tensor(30.0)))


def test_a_bf16_training_step_has_finite_fp32_losses_and_fp32_targets():
    config = load_config([], ["model.width=16", "model.attention_heads=2", "quantizer.codebook_sizes=[8,8,8]"])
    torch.manual_seed(0)
    model = DGIModel(config, 24, [8, 8, 8])
    items = torch.nn.functional.normalize(torch.randn(50, 24), dim=-1)
    batch = Batch(torch.arange(12), torch.randint(-1, 50, (12, 20)), torch.full((12,), -1))
    with autocast(torch.device("cpu"), torch.bfloat16):
        output = model.losses(batch, items, torch.zeros(0, 24), tau=0.5, generative=True)
    assert all(term.dtype == torch.float32 and torch.isfinite(term) for term in output.terms.values())
    model.weighted_total(output.terms).backward()
    assert model.item_tower.linear.weight.grad is not None


def test_one_thread_setting_reaches_torch_and_faiss():
    import faiss

    from dgi.device import set_threads

    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
    finally:
        set_threads(before)


def test_training_and_search_run_on_the_test_device(tiny_config, tiny_corpus, tmp_path):
    """DGI_TEST_DEVICE=cuda (benchmarks/gpu_check.sh) trains and searches on the GPU; cpu by default."""
    import os

    from dgi import pipeline

    device = os.environ.get("DGI_TEST_DEVICE", "cpu")
    config = tiny_config.model_copy(deep=True)
    config.train.device, config.train.joint_epochs = device, 1
    run = pipeline.train(config, tmp_path / "run", tiny_corpus, progress=False)
    retriever = pipeline.load_trained(run, tiny_corpus, device)
    assert retriever.item_vectors.device.type == torch.device(device).type
    history = [list(example.history) for example in tiny_corpus.dataset.splits["test"][:4]]
    hits = retriever.search([None] * 4, history, k=5)
    assert all(len(row) == 5 for row in hits)
