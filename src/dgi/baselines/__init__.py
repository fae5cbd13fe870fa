"""Reference retrievers (baselines) sharing one interface: fit(corpus) -> rank(corpus, split, k)."""

from dgi.baselines.bm25 import BM25Baseline
from dgi.baselines.content import ContentBaseline
from dgi.baselines.dense import DenseZeroShotBaseline
from dgi.baselines.popularity import PopularityBaseline
from dgi.baselines.sasrec import SASRecBaseline
from dgi.baselines.tiger import TigerBaseline

__all__ = ["BM25Baseline", "ContentBaseline", "DenseZeroShotBaseline", "PopularityBaseline", "SASRecBaseline",
           "TigerBaseline"]
