"""Differentiable Geometric Indexing: end-to-end generative retrieval."""

__version__ = "0.1.0"
