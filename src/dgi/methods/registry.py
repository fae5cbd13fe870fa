"""Every method by name, and `load_method`: whichever method a directory was saved from, loaded."""

from __future__ import annotations

from pathlib import Path

from dgi.baselines import (BM25Baseline, ContentBaseline, DenseZeroShotBaseline, PopularityBaseline, SASRecBaseline,
                           TigerBaseline)
from dgi.methods.base import Method, saved_method_name
from dgi.methods.dgi_method import DGIMethod
from dgi.model_dir import is_model_dir

BASELINES: dict[str, type] = {"sasrec": SASRecBaseline, "tiger": TigerBaseline, "popularity": PopularityBaseline,
                              "content": ContentBaseline, "bm25": BM25Baseline,
                              "dense_zero_shot": DenseZeroShotBaseline}  # by benchmark kind
SAVED: dict[str, type] = {cls.name: cls for cls in (DGIMethod, *BASELINES.values())}  # by `Method.name`


def load_method(directory: str | Path) -> Method:
    """The fitted method saved in `directory`: a DGI model directory or any baseline's `method.json`."""
    if is_model_dir(directory):
        return DGIMethod.load(directory)
    name = saved_method_name(directory)
    if name not in SAVED:
        raise ValueError(f"{Path(directory) / 'method.json'}: unknown method {name!r}; known: {', '.join(SAVED)}")
    return SAVED[name].load(directory)
