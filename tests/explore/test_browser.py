"""The explorer in a real headless Chromium (Debian's `chromium`, driven by Playwright): a
shared link translates, hovering lights the source token an output token attended to most (and
the reverse), the word alignments are listed and framed in the heat map, beam search with a
prefix and constraints lists its n best, and markup in texts or tokens stays text. Skips,
saying why, where Chromium or Playwright is missing."""

import json
import shutil
import urllib.parse

import numpy as np
import pytest

from tests.explore.conftest import ARCHS, post
from tests.explore.test_api import BEAM, CONSTRAINTS, GUIDED, PREFIX

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TEXT = "a b c d e"
MARKUP = "<img src=x onerror=window.injected=1>"


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed (pip install -e '.[test]' installs it)")
    if CHROMIUM is None:
        pytest.skip("no Chromium on PATH: apt-get install chromium (Debian) to run this test")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(120_000)  # a busy machine traces decoders slowly
    yield page
    page.close()


def index_of(locator, css_class):
    """The index of the one element of `locator` that has `css_class`."""
    marked = [i for i in range(locator.count())
              if css_class in (locator.nth(i).get_attribute("class") or "").split()]
    assert len(marked) == 1, marked
    return marked[0]


def clearest_argmax(weights, axis):
    """Index along the other axis whose argmax is the most clearly ahead of its runner-up."""
    ordered = np.sort(weights, axis=axis)
    gaps = np.take(ordered, -1, axis=axis) - np.take(ordered, -2, axis=axis)
    return int(np.argmax(gaps))


def test_a_link_translates_and_hover_shows_where_each_token_looked(page, explorer_url, tmp_path):
    page.goto(explorer_url + "?" + urllib.parse.urlencode({"text": TEXT}))
    cards = page.locator("section.run")
    page.locator("section.run table.heatmap td").first.wait_for()
    assert cards.count() == len(ARCHS)
    status, answer = post(explorer_url, {"text": TEXT})
    assert status == 200
    for card, result in zip([cards.nth(i) for i in range(len(ARCHS))], answer["results"]):
        assert card.locator(".translation").text_content() == (
            result["translation"] or "(empty output)")
    assert "fixed-length context vector" in cards.nth(0).locator(".no-attention").text_content()

    bahdanau, transformer = cards.nth(1), cards.nth(2)
    weights = np.array(answer["results"][1]["attention"])[-1].mean(axis=0)  # (T, S)
    row = clearest_argmax(weights, axis=1)
    bahdanau.locator("th.out").nth(row).hover()
    assert index_of(bahdanau.locator("th.src"), "argmax") == int(np.argmax(weights[row]))
    column = clearest_argmax(weights, axis=0)
    bahdanau.locator("th.src").nth(column).hover()
    assert index_of(bahdanau.locator("th.out"), "argmax") == int(np.argmax(weights[:, column]))

    result = answer["results"][1]
    pairs = result["alignments"].split()
    assert bahdanau.locator(".alignments .pair").all_text_contents() == pairs
    framed = [(i, j) for i, target in enumerate(result["target_words"])
              for j, source in enumerate(result["source_words"]) if f"{source}-{target}" in pairs]
    cells = bahdanau.locator("tbody tr")
    assert framed and bahdanau.locator("td.aligned").count() == len(framed)
    assert all("aligned" in cells.nth(i).locator("td").nth(j).get_attribute("class")
               for i, j in framed)

    transformer.locator("select").nth(1).select_option("1")  # the second head alone
    weights = np.array(answer["results"][2]["attention"])[-1, 1]
    row = clearest_argmax(weights, axis=1)
    transformer.locator("th.out").nth(row).hover()
    assert index_of(transformer.locator("th.src"), "argmax") == int(np.argmax(weights[row]))
    page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
    assert (tmp_path / "explorer.png").stat().st_size > 10_000

    page.check("input[value=beam]")
    for name, value in BEAM.items():
        page.fill(f"#{name}", str(value))
    page.fill("#prefix", PREFIX)
    page.fill("#constraints", "\n".join(["", *CONSTRAINTS, "  "]))  # blank lines are dropped
    page.click("#translate")
    page.locator("ol.nbest").first.wait_for()
    status, answer = post(explorer_url, GUIDED)
    assert status == 200
    for i, result in enumerate(answer["results"]):
        assert cards.nth(i).locator("ol.nbest .hypothesis").all_text_contents() == [
            h["translation"] or "(empty)" for h in [result, *result["alternatives"]]]
    query = urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)
    assert query["strategy"] == ["beam"] and query["n_best"] == [str(BEAM["n_best"])]
    assert query["prefix"] == [PREFIX] and query["constraints"] == ["\n".join(CONSTRAINTS)]


def test_markup_in_the_text_and_in_tokens_stays_text(page, explorer_url):
    """The server's answers are replaced by ones full of markup (as a vocabulary could hold),
    and the runs' font check by "no Hangul font", to see what the page makes of them."""
    tokens = [MARKUP, "<b>bold</b>", "[END]"]
    result = {"run": "<u>run</u>", "arch": "<i>x</i>", "seconds": 0.1, "translation": MARKUP,
              "score": -1.0, "log_probability": -1.0, "length_penalty": None,
              "source_tokens": tokens, "target_tokens": tokens,
              "attention": [[np.eye(3).tolist()]], "attention_note": None,
              "alignments": "0-0 1-1", "source_words": [0, 1, None],
              "target_words": [0, 1, None],
              "notes": ["<i>a note</i>"], "alternatives": []}
    page.route("**/api/translate", lambda route: route.fulfill(
        content_type="application/json",
        body=json.dumps({"text": MARKUP, "notes": [MARKUP], "results": [result]})))
    page.route("**/api/runs", lambda route: route.fulfill(
        content_type="application/json",
        body=json.dumps({"runs": [], "hangul_font": None, "max_characters": 5000})))
    page.goto(explorer_url + "?" + urllib.parse.urlencode({"text": MARKUP}))
    page.locator("table.heatmap td").first.wait_for()
    assert page.input_value("#text") == MARKUP
    assert page.locator(".translation").text_content() == MARKUP
    assert page.locator("th.src").all_text_contents() == tokens
    assert page.locator("#results img, #results b, #results u, #results i, #notes img").count() == 0
    assert page.evaluate("window.injected") is None
    notes = page.locator("#notes .note").all_text_contents()
    assert MARKUP in notes and any("No font with Hangul glyphs" in note for note in notes)
