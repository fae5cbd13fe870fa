"""benchmarks/scale.py on a small catalogue: every method's numbers, the exact searches agree, the figure."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch

from dgi.device import autocast_dtype
from dgi.figures import scale_png

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "scale.py"


def test_scale_benchmark_reports_every_method_and_exact_searches_agree():
    spec = importlib.util.spec_from_file_location("scale", SCRIPT)
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    args = argparse.Namespace(queries=64, repeats=5, threads=1, build_threads=1, kmeans_iterations=2, device="cpu",
                              item_vectors="float16")
    result = scale.measure_size(2000, args)
    methods = {name: value for name, value in result.items() if name != "catalogue"}
    expected = {"dgi_lexicographic", "dgi_rerank", "dgi_dense", "faiss_flat", "faiss_hnsw"}
    if autocast_dtype(torch.device("cpu"), "auto") is not None:  # a CPU with native bf16
        expected.add("dgi_lexicographic_bf16")
    assert set(methods) == expected
    for numbers in methods.values():
        assert {"p50_ms_b1", "p99_ms_b1", "qps_b256", "recall_at_10", "bytes_per_item"} <= set(numbers)
        assert numbers["p99_ms_b1"] >= numbers["p50_ms_b1"] > 0 and 0.0 <= numbers["recall_at_10"] <= 1.0
    # float16 item vectors against the float32 exact search: near ties may swap, nothing more
    assert methods["dgi_dense"]["recall_at_10"] > 0.98 and methods["faiss_flat"]["recall_at_10"] > 0.99
    assert methods["dgi_dense"]["tensor_bytes_per_item"] < 128 * 2 + 64  # float16 vectors, small codes
    assert 0.0 < result["catalogue"]["unique_sid_share"] <= 1.0
    assert scale_png({2000: methods, 4000: methods}).startswith(b"\x89PNG")
