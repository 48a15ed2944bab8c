"""The page in a real browser: headless Chromium opens /, uploads an image and shows its label and bar."""
from __future__ import annotations


import pytest

from petclf import Predictor

from ..web import chromium, watched_page
from .conftest import CLASSES, image_bytes

@pytest.fixture(scope="module")
def browser():
    yield from chromium()


def test_upload_an_image_and_see_its_label(browser, server, model_dir, tmp_path):
    files = []
    for seed in (31, 32):
        path = tmp_path / f"photo{seed}.png"
        path.write_bytes(image_bytes(seed))
        files.append(path)
    expected = [top[0][0] for top in Predictor(model_dir, device="cpu", precision="fp32").predict_batch(files, topk=1)]
    page, problems = watched_page(browser)
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(server.url + "/")
    card = page.locator(".card")
    assert "resnet18" in card.inner_text() and "<b>owl</b>" in card.locator(".classes").inner_text()
    assert card.locator("b").count() == 0  # the HTML class name is text, not markup
    page.set_input_files("#files", [str(p) for p in files])
    page.wait_for_selector(".result:nth-child(2) .label")
    results = page.locator(".result")
    assert [results.nth(i).locator("figcaption").inner_text() for i in range(2)] == [p.name for p in files]
    assert [results.nth(i).locator(".label").first.inner_text() for i in range(2)] == expected
    assert results.nth(0).locator("li").count() == min(5, len(CLASSES))
    width = results.nth(0).locator(".fill").first.evaluate("node => node.style.width")
    assert width.endswith("%") and float(width[:-1]) > 0
    assert not problems, problems  # no script errors, no Content-Security-Policy violations
    assert all(url.startswith((server.url, "blob:", "data:")) for url in requests), requests  # works offline
    page.close()


def test_the_heat_map_box_shows_the_servers_overlay(browser, server, tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(image_bytes(33))
    page, problems = watched_page(browser)
    page.goto(server.url + "/")
    page.check("#explain")
    page.set_input_files("#files", [str(path)])
    heat = page.wait_for_selector(".result img.heat")
    page.wait_for_function("node => node.complete && node.naturalWidth > 0", arg=heat)
    assert heat.evaluate("node => node.naturalWidth") == 48  # the PNG decoded: the policy let its blob: URL load
    label = page.locator(".result .label").first.inner_text()
    assert page.locator(".result p.why").inner_text() == f"where the model looked for {label}"
    assert not problems, problems
    page.close()
