"""The review page in a real browser: headless Chromium relabels one image and removes another (a click and a key),
then decisions.csv is checked, applied and undone."""
from __future__ import annotations

import csv
import json
import time

import pytest

import petclf
from petclf.audit.apply import apply_decisions, undo
from petclf.audit.review import review_app

from ..web import ThreadServer, chromium, watched_page
from .conftest import make_pictures, tree

@pytest.fixture(scope="module")
def browser():
    yield from chromium()


def _rows(path):
    return list(csv.DictReader(path.open())) if path.exists() else []


def test_relabel_and_remove_in_the_browser(browser, tmp_path, model_dir):
    data = tmp_path / "data"
    truth = make_pictures(data, "classes")
    out = tmp_path / "audit"
    petclf.audit(data, model=model_dir, folds=3, out=out, precision="fp32")
    items = json.loads((out / "audit.json").read_text())["items"]
    flip = next(i for i in items if i["path"].split("/")[-1] in truth["flips"] and i["suggested"] != i["given"])
    copy = next(i for i in items if "exact copy" in i["issues"])
    before = tree(data)
    with ThreadServer(review_app(out)) as server:
        page, problems = watched_page(browser)
        page.goto(server.url + "/")
        page.wait_for_selector(".card")
        assert page.locator(".card").count() == len(items)
        card = page.locator(f'.card[data-item="{flip["item"]}"]')
        assert flip["given"] in card.inner_text() and flip["suggested"] in card.inner_text()
        card.locator("button.suggested").click()  # relabel as suggested, by a click
        page.locator(f'.card[data-item="{copy["item"]}"] .path').click()  # focus the copy's card ...
        page.keyboard.press("x")  # ... and remove it by its key
        deadline = time.monotonic() + 10
        while len(_rows(out / "decisions.csv")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        page.reload()  # the page shows the saved decisions again
        page.wait_for_selector(".card.remove")
        assert page.locator(".card.relabel").count() == 1 and page.locator(".card.remove").count() == 1
        assert "2 of" in page.locator("#progress").inner_text()
        assert not problems, problems
        page.close()
    rows = {int(r["item"]): r for r in _rows(out / "decisions.csv")}
    assert set(rows) == {flip["item"], copy["item"]}
    assert (rows[flip["item"]]["action"], rows[flip["item"]]["label"]) == ("relabel", flip["suggested"])
    assert rows[copy["item"]]["action"] == "remove"
    done = apply_decisions(out / "decisions.csv")
    assert len(done.applied) == 2 and not done.refused
    assert (data / flip["suggested"] / flip["path"].split("/")[-1]).exists()
    assert not (data / copy["path"]).exists()
    undo(done.journal)
    assert tree(data) == before
