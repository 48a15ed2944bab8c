"""The review app: decisions written at once and shown again after a restart; images only by item, inside the data."""
from __future__ import annotations

import csv
import json

import pytest
from starlette.testclient import TestClient

import petclf
from petclf.audit.review import review_app

from .conftest import make_pictures


@pytest.fixture()
def audited(tmp_path, model_dir):
    data = tmp_path / "data"
    make_pictures(data, "classes")
    out = tmp_path / "audit"
    petclf.audit(data, model=model_dir, folds=3, out=out, precision="fp32")
    return data, out, json.loads((out / "audit.json").read_text())


def test_decisions_survive_a_restart(audited):
    data, out, record = audited
    first, second = record["items"][0], record["items"][1]
    with TestClient(review_app(out)) as client:
        page = client.get("/")
        assert page.status_code == 200 and "script-src 'nonce-" in page.headers["content-security-policy"]
        state = client.get("/api/state").json()
        assert len(state["items"]) == len(record["items"]) and state["decisions"] == {}
        assert client.post("/api/decision", json={"item": 0, "action": "relabel", "label": "blue"}).json()["ok"]
        assert client.post("/api/decision", json={"item": 1, "action": "remove"}).status_code == 200
        assert client.post("/api/decision", json={"item": 2, "action": "keep"}).status_code == 200
        assert client.post("/api/decision", json={"item": 2, "action": "clear"}).status_code == 200
    rows = list(csv.DictReader((out / "decisions.csv").open()))
    assert [(r["item"], r["path"], r["action"], r["label"]) for r in rows] == [
        ("0", first["path"], "relabel", "blue"), ("1", second["path"], "remove", "")]
    with TestClient(review_app(out)) as client:  # a new server process reads them back
        assert client.get("/api/state").json()["decisions"] == {"0": {"action": "relabel", "label": "blue"},
                                                                "1": {"action": "remove", "label": ""}}


def test_bad_requests_and_paths(audited):
    data, out, record = audited
    record["items"][1]["path"] = "../../../etc/passwd"
    (out / "audit.json").write_text(json.dumps(record))
    with TestClient(review_app(out)) as client:
        image = client.get("/image/0")
        assert image.status_code == 200 and image.content == (data / record["items"][0]["path"]).read_bytes()
        assert client.get("/image/1").status_code == 404  # audit.json edited to point outside the data
        assert client.get(f"/image/{len(record['items'])}").status_code == 404
        assert client.get("/image/..%2F..%2Fetc%2Fpasswd").status_code == 404
        assert client.post("/api/decision", json={"item": 0, "action": "relabel", "label": "owl"}).status_code == 400
        assert client.post("/api/decision", json={"item": 0, "action": "burn"}).status_code == 400
        assert client.post("/api/decision", json={"item": 999, "action": "keep"}).status_code == 404
        assert client.post("/api/decision", content=b"not json").status_code == 400
    assert not (out / "decisions.csv").exists()
