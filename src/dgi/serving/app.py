"""The HTTP API over a model directory (FastAPI): search, batch search, item updates, health, metrics.

Bad input is a 4xx naming the field (FastAPI's validation errors for types and ranges; 404/409/422
for unknown or duplicate ids), never a 500, and it leaves the catalogue unchanged.
"""

# No `from __future__ import annotations`: FastAPI reads the request models of the endpoints, which are
# defined inside create_app (their limits come from the settings), from real annotations.
import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from dgi.data import Item
from dgi.retriever import Retriever, SearchHit
from dgi.serving.batcher import MicroBatcher
from dgi.serving.journal import ItemJournal

JOURNAL = "journal.jsonl"


@dataclass(frozen=True)
class ServerSettings:
    max_k: int = 100
    max_query_chars: int = 2000
    max_history: int = 200
    max_batch_requests: int = 256
    unknown_history: Literal["error", "ignore"] = "error"
    batch_size: int = 64
    batch_wait_ms: float = 2.0
    warm_up: bool = False  # load the text encoder before the first request (dgi serve: on)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hit(Strict):
    item_id: str
    score: float
    sid: list[int]
    text: str


class SearchResponse(Strict):
    results: list[Hit]


class NewItem(Strict):
    id: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=10_000)


def create_app(model_dir: str | Path, settings: ServerSettings = ServerSettings(),
               retriever: Retriever | None = None) -> FastAPI:
    """The app for one model directory; its journal (MODEL_DIR/journal.jsonl) is replayed first."""
    model_dir = Path(model_dir)
    retriever = retriever or Retriever.load(model_dir)
    journal = ItemJournal(model_dir / JOURNAL)
    replay(retriever, journal)

    class SearchRequest(Strict):
        query: str | None = Field(None, max_length=settings.max_query_chars)
        history: list[str] = Field(default_factory=list, max_length=settings.max_history)
        k: int = Field(10, ge=1, le=settings.max_k)
        rule: Literal["lexicographic", "fused", "rerank", "dense"] | None = None

    class BatchRequest(Strict):
        requests: list[SearchRequest] = Field(min_length=1, max_length=settings.max_batch_requests)

    class BatchResponse(Strict):
        responses: list[SearchResponse]

    class AddRequest(Strict):
        items: list[NewItem] = Field(min_length=1, max_length=10_000)

    registry = CollectorRegistry()
    requests = Counter("dgi_requests", "HTTP requests", ["endpoint", "status"], registry=registry)
    latency = Histogram("dgi_request_seconds", "request latency", ["endpoint"], registry=registry,
                        buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
    batch_sizes = Histogram("dgi_search_batch_size", "searches per micro-batch", registry=registry,
                            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
    catalogue = Gauge("dgi_catalogue_items", "items indexed", registry=registry)
    catalogue.set_function(lambda: len(retriever))
    batcher = MicroBatcher(retriever, settings.batch_size, settings.batch_wait_ms, batch_sizes.observe)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if settings.warm_up and retriever.encoder is not None:  # else the first query pays for loading it
            await batcher.on_model_thread(retriever.encoder.encode, ["warm-up"])
        yield
        batcher.close()

    app = FastAPI(title="dgi", description=f"Generative retrieval over {model_dir}", lifespan=lifespan)

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = route.path if route is not None else "unmatched"
        latency.labels(endpoint).observe(time.perf_counter() - started)
        requests.labels(endpoint, str(response.status_code)).inc()
        return response

    def known_history(history: list[str], field: tuple) -> list[str]:
        unknown = [(i, item_id) for i, item_id in enumerate(history) if item_id not in retriever]
        if unknown and settings.unknown_history == "error":
            i, item_id = unknown[0]
            raise HTTPException(422, [{"loc": [*field, "history", i], "msg": f"unknown item id {item_id!r}",
                                       "type": "unknown_item"}])
        return [item_id for item_id in history if item_id in retriever]

    def checked(request: SearchRequest, field: tuple) -> tuple[str | None, list[str]]:
        """(query or None, the known history ids), or a 422 naming the field."""
        history = known_history(request.history, field)
        query = request.query if request.query and request.query.strip() else None
        if query is None and not history:
            raise HTTPException(422, [{"loc": [*field], "msg": "give a query, a history or both",
                                       "type": "empty_request"}])
        return query, history

    async def run_search(request: SearchRequest, query: str | None, history: list[str]) -> SearchResponse:
        hits = await batcher.search(query, history, request.k, request.rule)
        return SearchResponse(results=[_hit(hit) for hit in hits])

    @app.post("/search", response_model=SearchResponse)
    async def search(request: SearchRequest) -> SearchResponse:
        return await run_search(request, *checked(request, ("body",)))

    @app.post("/search/batch", response_model=BatchResponse)
    async def search_batch(batch: BatchRequest) -> BatchResponse:
        inputs = [checked(request, ("body", "requests", i)) for i, request in enumerate(batch.requests)]
        # every request is checked before any is run
        responses = [run_search(request, *args) for request, args in zip(batch.requests, inputs)]
        return BatchResponse(responses=list(await asyncio.gather(*responses)))

    @app.post("/items", status_code=201)
    async def add_items(body: AddRequest) -> dict:
        seen: dict[str, int] = {}
        for i, item in enumerate(body.items):
            if item.id in retriever or item.id in seen:
                problem = "is already indexed" if item.id in retriever else "appears twice in this request"
                raise HTTPException(409, [{"loc": ["body", "items", i, "id"], "msg": f"item id {item.id!r} {problem}",
                                           "type": "duplicate_id"}])
            seen[item.id] = i
        items = [Item(id=item.id, text=item.text) for item in body.items]

        def apply() -> list[dict]:
            journal.append({"op": "add", "items": [{"id": item.id, "text": item.text} for item in items]})
            retriever.add_items(items)
            return [{"item_id": item.id, "sid": list(retriever.item(item.id)[1])} for item in items]

        return {"added": await batcher.on_model_thread(apply)}

    @app.get("/items/{item_id}")
    async def get_item(item_id: str) -> dict:
        if item_id not in retriever:
            raise HTTPException(404, [{"loc": ["path", "item_id"], "msg": f"unknown item id {item_id!r}",
                                       "type": "unknown_item"}])
        text, sid = retriever.item(item_id)
        return {"item_id": item_id, "text": text, "sid": list(sid)}

    @app.delete("/items/{item_id}")
    async def delete_item(item_id: str) -> dict:
        if item_id not in retriever:
            raise HTTPException(404, [{"loc": ["path", "item_id"], "msg": f"unknown item id {item_id!r}",
                                       "type": "unknown_item"}])

        def apply() -> None:
            journal.append({"op": "delete", "ids": [item_id]})
            retriever.remove_items([item_id])

        await batcher.on_model_thread(apply)
        return {"deleted": item_id}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "items": len(retriever), "model_dir": str(model_dir)}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def replay(retriever: Retriever, journal: ItemJournal) -> int:
    """Apply the journal's changes in order; returns how many records were applied."""
    applied = 0
    for record in journal.records():
        if record["op"] == "add":
            retriever.add_items([Item(id=item["id"], text=item["text"]) for item in record["items"]])
        else:
            retriever.remove_items(record["ids"])
        applied += 1
    return applied


def _hit(hit: SearchHit) -> Hit:
    return Hit(item_id=hit.item_id, score=hit.score, sid=list(hit.sid), text=hit.text)
