"""Serving a model directory over HTTP: `dgi serve` (FastAPI + uvicorn), micro-batched search, durable item updates."""
