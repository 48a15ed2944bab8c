"""The review app: decisions written at once and shown again after a restart; images only by item, inside the data;
writes only from its own page (JSON, same origin, the run's token), only for its own Host names; strict bodies;
two servers or a hand edit on one audit lose no decision."""
from __future__ import annotations

import csv
import json
import re

import pytest
from starlette.testclient import TestClient

import petclf
from petclf.audit.review import review_app

from .conftest import make_pictures

BASE = "http://127.0.0.1:8765"


@pytest.fixture()
def audited(tmp_path, model_dir):
    data = tmp_path / "data"
    make_pictures(data, "classes")
    out = tmp_path / "audit"
    petclf.audit(data, model=model_dir, folds=3, out=out, precision="fp32")
    return data, out, json.loads((out / "audit.json").read_text())


@pytest.fixture(scope="module")
def audited_once(tmp_path_factory, model_dir):
    """One audit for the tests that write nothing."""
    tmp_path = tmp_path_factory.mktemp("review")
    make_pictures(tmp_path / "data", "classes")
    petclf.audit(tmp_path / "data", model=model_dir, folds=3, out=tmp_path / "audit", precision="fp32")
    return tmp_path / "data", tmp_path / "audit", json.loads((tmp_path / "audit" / "audit.json").read_text())


def client_for(out) -> TestClient:
    """A client of a new review app that writes as its page does: JSON, same origin, with the page's token."""
    client = TestClient(review_app(out), base_url=BASE)
    page = client.get("/")
    token = re.search(r'name="petclf-token" content="([^"]+)"', page.text)
    client.headers.update({"X-Petclf-Token": token.group(1) if token else "", "Origin": BASE})
    return client


def _rows(out):
    return [(r["item"], r["action"], r["label"]) for r in csv.DictReader((out / "decisions.csv").open())]


def test_decisions_survive_a_restart(audited):
    data, out, record = audited
    first, second = record["items"][0], record["items"][1]
    with client_for(out) as client:
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
    with client_for(out) as client:  # a new server process reads them back
        assert client.get("/api/state").json()["decisions"] == {"0": {"action": "relabel", "label": "blue"},
                                                                "1": {"action": "remove", "label": ""}}


def test_bad_requests_and_paths(audited):
    data, out, record = audited
    record["items"][1]["path"] = "../../../etc/passwd"
    (out / "audit.json").write_text(json.dumps(record))
    with client_for(out) as client:
        image = client.get("/image/0")
        assert image.status_code == 200 and image.content == (data / record["items"][0]["path"]).read_bytes()
        assert client.get("/image/1").status_code == 404  # audit.json edited to point outside the data
        assert client.get(f"/image/{len(record['items'])}").status_code == 404
        assert client.get("/image/..%2F..%2Fetc%2Fpasswd").status_code == 404
        assert client.post("/api/decision", json={"item": 0, "action": "relabel", "label": "owl"}).status_code == 400
        assert client.post("/api/decision", json={"item": 0, "action": "burn"}).status_code == 400
        assert client.post("/api/decision", json={"item": 999, "action": "keep"}).status_code == 404
        assert client.post("/api/decision", content=b"not json",
                           headers={"Content-Type": "application/json"}).status_code == 400
    assert not (out / "decisions.csv").exists()


def test_cross_site_writes_and_other_hosts_are_refused(audited):
    """Issue #21 item 7: a page of another site (text/plain, its Origin, no token) or a rebound Host gets nothing."""
    data, out, record = audited
    with client_for(out) as client:
        token = client.headers["X-Petclf-Token"]
        evil = client.post("/api/decision", content=b'{"item": 4, "action": "remove"}',
                           headers={"Content-Type": "text/plain", "Origin": "http://evil.example"})
        assert evil.status_code == 415
        assert client.post("/api/decision", json={"item": 4, "action": "remove"},
                           headers={"Origin": "http://evil.example"}).status_code == 403
        assert client.post("/api/decision", json={"item": 4, "action": "remove"},
                           headers={"Origin": "null"}).status_code == 403
        assert client.post("/api/decision", json={"item": 4, "action": "remove"},
                           headers={"X-Petclf-Token": "guess"}).status_code == 403
        del client.headers["X-Petclf-Token"]
        assert client.post("/api/decision", json={"item": 4, "action": "remove"}).status_code == 403
        for host in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example"):
            assert client.get("/api/state", headers={"Host": host}).status_code == 400
            assert client.get("/image/0", headers={"Host": host}).status_code == 400
            assert client.get("/", headers={"Host": host}).status_code == 400
        assert not (out / "decisions.csv").exists()
        assert client.get("/api/state", headers={"Host": "localhost:8765"}).status_code == 200
        ok = client.post("/api/decision", json={"item": 4, "action": "remove"}, headers={"X-Petclf-Token": token})
        assert ok.status_code == 200
    assert _rows(out) == [("4", "remove", "")]
    with client_for(out) as other:  # a token is good for one run only
        assert other.post("/api/decision", json={"item": 4, "action": "keep"},
                          headers={"X-Petclf-Token": token}).status_code == 403


@pytest.mark.parametrize("body", [b'{"item": 1e999, "action": "keep"}', b'{"item": true, "action": "keep"}',
                                  b'{"item": 1.9, "action": "keep"}', b'{"item": "1", "action": "keep"}',
                                  b'{"item": 1, "action": ["keep"]}', b'{"item": 1, "action": "relabel", "label": 3}',
                                  b"[" * 2000 + b"]" * 2000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
                                  b'[1, 2]', b'"keep"', b"\xff\xfe"])
def test_strict_item_numbers_and_bodies(audited_once, body):
    """Issue #21 item 10: infinity, deep nesting, booleans and fractions are 400 (were 500, or taken as item 1)."""
    data, out, record = audited_once
    with client_for(out) as client:
        answer = client.post("/api/decision", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, answer.text
        assert "error" in answer.json()
    assert not (out / "decisions.csv").exists()


def test_two_servers_and_a_hand_edit_lose_nothing(audited):
    """Issue #21 item 3: each write merges with decisions.csv as it is on disk, under a lock."""
    data, out, record = audited
    items = record["items"]
    other = next(c for c in ("red", "green", "blue") if c != items[2]["given"])
    with client_for(out) as a, client_for(out) as b:
        assert a.post("/api/decision", json={"item": 0, "action": "remove"}).status_code == 200
        assert b.post("/api/decision", json={"item": 1, "action": "keep"}).status_code == 200  # B started before A wrote
        assert a.post("/api/decision", json={"item": 2, "action": "relabel", "label": other}).status_code == 200
        assert _rows(out) == [("0", "remove", ""), ("1", "keep", ""), ("2", "relabel", other)]
        with (out / "decisions.csv").open("a") as f:  # a hand edit while both run
            f.write(f"3,{items[3]['path']},{items[3]['given']},keep,,\n")
        assert b.post("/api/decision", json={"item": 1, "action": "clear"}).status_code == 200
        assert _rows(out) == [("0", "remove", ""), ("2", "relabel", other), ("3", "keep", "")]
        assert b.get("/api/state").json()["decisions"].keys() == {"0", "2", "3"}
        # A row the server cannot read is not dropped by the next write: the write is refused until it is fixed.
        with (out / "decisions.csv").open("a") as f:
            f.write(f"4,{items[4]['path']},{items[4]['given']},burn,,\n")
        before = (out / "decisions.csv").read_bytes()
        refused = a.post("/api/decision", json={"item": 5, "action": "keep"})
        assert refused.status_code == 409 and "line 5" in refused.json()["error"]
        assert (out / "decisions.csv").read_bytes() == before
        (out / "decisions.csv").write_bytes(before + "5,é,red,keep,,\n".encode("latin-1"))  # not UTF-8 at all
        state = a.get("/api/state")
        assert state.status_code == 200 and "cannot be read" in state.json()["problems"][0]
        assert a.post("/api/decision", json={"item": 5, "action": "keep"}).status_code == 409
        assert (out / "decisions.csv").read_bytes().startswith(before)


def test_the_hosts_answered_follow_the_bound_address():
    """Item 7: loopback answers to its loopback names only; another address to itself; 0.0.0.0 to this machine's."""
    from petclf.audit.review import allowed_hosts

    assert set(allowed_hosts("127.0.0.1")) == {"127.0.0.1", "localhost"}
    assert set(allowed_hosts("localhost")) == {"127.0.0.1", "localhost"}
    assert allowed_hosts("192.0.2.7") == ["192.0.2.7"]
    everywhere = allowed_hosts("0.0.0.0")
    assert {"127.0.0.1", "localhost"} <= set(everywhere) and "*" not in everywhere and "evil.example" not in everywhere


def test_an_editor_saving_between_the_read_and_the_write_is_not_overwritten(audited, monkeypatch):
    """Item 3: an editor takes no lock; a save that lands while a decision is merged is read again, not lost."""
    import petclf.audit.review as review_module

    data, out, record = audited
    items = record["items"]
    real_read = review_module.read_decisions
    saved = []

    def editor_saves_meanwhile(*args, **kwargs):
        found = real_read(*args, **kwargs)
        if not saved:
            saved.append(True)
            with (out / "decisions.csv").open("a") as f:
                if f.tell() == 0:
                    f.write("item,path,given,action,label,decided_at\n")
                f.write(f"3,{items[3]['path']},{items[3]['given']},remove,,\n")
        return found

    with client_for(out) as client:
        monkeypatch.setattr(review_module, "read_decisions", editor_saves_meanwhile)
        assert client.post("/api/decision", json={"item": 1, "action": "keep"}).status_code == 200
    assert _rows(out) == [("1", "keep", ""), ("3", "remove", "")]
