"""Evaluation: the metrics (one convention for every method) and the full-split protocol."""
