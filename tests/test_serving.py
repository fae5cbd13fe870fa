"""`dgi serve`: real HTTP against a model directory (FastAPI's TestClient in process, uvicorn for kill -9)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient

from dgi.training.run import RunDirectory
from dgi.serving.app import JOURNAL, ServerSettings, create_app


@pytest.fixture
def model_dir(trained_run, tmp_path):
    return shutil.copytree(RunDirectory(trained_run).model_dir, tmp_path / "model")


@pytest.fixture
def client(model_dir):
    with TestClient(create_app(model_dir, ServerSettings(max_k=50, max_query_chars=100))) as client:
        yield client


def _first_ids(model_dir, n: int) -> list[str]:
    return [json.loads(line)["id"] for line in (model_dir / "items.jsonl").read_text().splitlines()[:n]]


def test_search_and_batch_search(client, model_dir):
    history = _first_ids(model_dir, 3)
    response = client.post("/search", json={"history": history, "k": 5})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 5 and {"item_id", "score", "sid", "text"} == set(results[0])
    assert all(len(hit["sid"]) == 3 for hit in results)
    batch = client.post("/search/batch", json={"requests": [{"history": history, "k": 5},
                                                            {"query": "clay mask", "k": 3, "rule": "rerank"}]})
    assert batch.status_code == 200, batch.text
    first, second = batch.json()["responses"]
    assert first == response.json() and len(second["results"]) == 3


def test_concurrent_requests_are_micro_batched(client, model_dir):
    ids = _first_ids(model_dir, 40)
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda i: client.post("/search", json={"history": [ids[i]], "k": 4}), range(40)))
    assert all(r.status_code == 200 for r in responses)
    single = client.post("/search", json={"history": [ids[7]], "k": 4}).json()["results"]
    batched = responses[7].json()["results"]  # batching does not change a result (beyond float rounding)
    assert [h["item_id"] for h in batched] == [h["item_id"] for h in single]
    assert [h["score"] for h in batched] == pytest.approx([h["score"] for h in single], abs=1e-4)
    metrics = client.get("/metrics").text
    sizes = [line for line in metrics.splitlines() if line.startswith("dgi_search_batch_size_count")]
    batches = float(sizes[0].split()[-1])
    assert batches < 41  # 41 searches ran in fewer batches
    assert 'dgi_requests_total{endpoint="/search",status="200"} 41.0' in metrics
    assert "dgi_catalogue_items" in metrics and "dgi_request_seconds_bucket" in metrics


def test_add_get_delete_items(client, model_dir):
    added = client.post("/items", json={"items": [{"id": "NEW-1", "text": "Nordvik travel clay mask, 50 ml"}]})
    assert added.status_code == 201, added.text
    sid = added.json()["added"][0]["sid"]
    assert client.get("/items/NEW-1").json() == {"item_id": "NEW-1", "text": "Nordvik travel clay mask, 50 ml",
                                                 "sid": sid}
    found = client.post("/search", json={"query": "Nordvik travel clay mask, 50 ml", "k": 20, "rule": "rerank"})
    assert "NEW-1" in [hit["item_id"] for hit in found.json()["results"]]
    assert client.delete("/items/NEW-1").json() == {"deleted": "NEW-1"}
    assert client.get("/items/NEW-1").status_code == 404
    existing = _first_ids(model_dir, 1)[0]
    assert client.delete(f"/items/{existing}").status_code == 200
    after = client.post("/search", json={"history": _first_ids(model_dir, 3)[1:], "k": 50}).json()["results"]
    assert existing not in [hit["item_id"] for hit in after]
    assert client.get("/healthz").json()["items"] == len(_first_ids(model_dir, 10**6)) - 1


@pytest.mark.parametrize("body, field", [
    (None, "body"),
    ({"history": ["x"], "k": 0}, "k"),
    ({"history": ["x"], "k": 51}, "k"),
    ({"history": ["x"], "k": "ten"}, "k"),
    ({"query": "q" * 101}, "query"),
    ({"history": ["NO-SUCH-ITEM"]}, "history"),
    ({"query": "mask", "rule": "best"}, "rule"),
    ({"query": "mask", "colour": "red"}, "colour"),
    ({}, "body"),
])
def test_bad_search_input_is_a_4xx_naming_the_field(client, body, field):
    response = client.post("/search", json=body) if body is not None else \
        client.post("/search", content=b"{not json", headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert field in json.dumps(response.json()["detail"]), response.text
    assert client.get("/healthz").status_code == 200  # still serving


def test_bad_item_input_leaves_the_catalogue_unchanged(client, model_dir):
    before = client.get("/healthz").json()["items"]
    existing = _first_ids(model_dir, 1)[0]
    cases = [({"items": [{"id": existing, "text": "dup"}]}, 409, "id"),
             ({"items": [{"id": "A", "text": "a"}, {"id": "A", "text": "again"}]}, 409, "id"),
             ({"items": [{"id": "", "text": "no id"}]}, 422, "id"),
             ({"items": [{"id": "B", "text": ""}]}, 422, "text"),
             ({"items": []}, 422, "items"),
             ({"things": []}, 422, "things")]
    for body, status, field in cases:
        response = client.post("/items", json=body)
        assert response.status_code == status and field in json.dumps(response.json()["detail"]), response.text
    assert client.delete("/items/NO-SUCH-ITEM").status_code == 404
    assert client.get("/healthz").json()["items"] == before and not (model_dir / JOURNAL).exists()


def test_unknown_history_ids_can_be_ignored(model_dir):
    with TestClient(create_app(model_dir, ServerSettings(unknown_history="ignore"))) as client:
        known = _first_ids(model_dir, 1)
        response = client.post("/search", json={"history": ["NO-SUCH-ITEM", *known], "k": 3})
        assert response.status_code == 200
        assert response.json() == client.post("/search", json={"history": known, "k": 3}).json()


def test_changes_survive_a_restart_and_a_torn_journal_line_is_skipped(model_dir):
    with TestClient(create_app(model_dir)) as client:
        assert client.post("/items", json={"items": [{"id": "NEW-2", "text": "Nordvik rose water toner"}]}).status_code == 201
        removed = _first_ids(model_dir, 1)[0]
        assert client.delete(f"/items/{removed}").status_code == 200
    with open(model_dir / JOURNAL, "a") as journal:
        journal.write('{"op": "add", "items": [{"id": "HALF')  # a crash mid-write: never acknowledged
    with pytest.warns(UserWarning, match="unreadable journal line"), TestClient(create_app(model_dir)) as client:
        assert client.get("/items/NEW-2").status_code == 200 and client.get(f"/items/{removed}").status_code == 404
        assert client.get("/items/HALF").status_code == 404


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(model_dir, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "dgi.cli", "serve", str(model_dir), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(240):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.5)
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode())
    raise AssertionError("server did not start")


def test_an_acknowledged_add_survives_kill_9_of_the_server(model_dir):
    port = _free_port()
    server = _start(model_dir, port)
    try:
        added = httpx.post(f"http://127.0.0.1:{port}/items", timeout=120,
                           json={"items": [{"id": "KILLED-1", "text": "Nordvik argan hair oil"}]})
        assert added.status_code == 201, added.text
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    server = _start(model_dir, port)
    try:
        item = httpx.get(f"http://127.0.0.1:{port}/items/KILLED-1", timeout=30)
        assert item.status_code == 200 and item.json()["text"] == "Nordvik argan hair oil"
        assert httpx.get(f"http://127.0.0.1:{port}/docs", timeout=30).status_code == 200
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
