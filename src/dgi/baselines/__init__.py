"""Non-generative reference retrievers sharing one interface: fit(corpus) -> rank(corpus, split, k)."""

from dgi.baselines.popularity import PopularityBaseline

__all__ = ["PopularityBaseline"]
