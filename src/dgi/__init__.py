"""Differentiable Geometric Indexing: end-to-end generative retrieval."""

from dgi.data import Item
from dgi.pipeline import load_retriever
from dgi.retriever import Retriever, SearchHit

__version__ = "0.1.0"
__all__ = ["Item", "Retriever", "SearchHit", "load_retriever"]
