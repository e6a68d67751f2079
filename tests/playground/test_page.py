"""The playground page end to end: Debian's chromium, driven by Playwright, opens /ui on a real
server with the example store, types into `chars`, watches the probabilities, deletes, forks, plays
a `sensor` wave, and what it shows is checked against the models run directly by ONNX Runtime.

Set SEQSERVE_SCREENSHOT=path.png to keep a screenshot of the page (the README's is made so).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page, sync_playwright

from helpers.onnx_models import run_directly
from helpers.server import RunningServer, running_server

ROOT = Path(__file__).resolve().parents[2]
CHARS = ROOT / "model_store" / "chars" / "1"
ALPHABET = " abcdehilmnorstw."
CONTINUATION = 24


def _next_char(text: str) -> np.ndarray:
    x = np.eye(len(ALPHABET), dtype=np.float32)[[ALPHABET.index(c) for c in text]][None]
    return run_directly(CHARS, {"chars": x})["next_char"][0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(ROOT / "model_store", log_dir=tmp_path_factory.mktemp("playground")) as running:
        yield running


@pytest.fixture(scope="module")
def page(server: RunningServer) -> Iterator[Page]:
    chromium = shutil.which("chromium")
    assert chromium, "the page test needs Debian's chromium (`make setup-test` installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 1250})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://{server.http_url}/ui")
        page.wait_for_selector("body[data-ready=true]", timeout=20_000)
        yield page
        assert not errors, errors
        browser.close()


def _shown_probabilities(page: Page, text: str) -> np.ndarray:
    page.wait_for_selector(f"#chars-probabilities[data-text='{text}']", timeout=20_000)
    bars = page.query_selector_all("#chars-probabilities .bar")
    assert [b.get_attribute("data-char") for b in bars] == list(ALPHABET)
    return np.array([float(b.get_attribute("data-p")) for b in bars])


def test_the_page_lists_the_models_with_their_signatures(page: Page) -> None:
    rows = {r.get_attribute("data-model"): r.inner_text() for r in page.query_selector_all("#models tbody tr")}
    assert set(rows) == {"chars", "frames", "sensor", "sentiment"}
    assert "next_char FP32 [-1, 17]" in rows["chars"] and rows["sentiment"].endswith("no")


def test_typing_shows_the_model_s_next_character_probabilities(page: Page) -> None:
    box = page.locator("#chars-text")
    box.click()
    box.press_sequentially("the c", delay=60)  # keystroke by keystroke, each a step on the WebSocket
    np.testing.assert_allclose(_shown_probabilities(page, "the c"), _next_char("the c"), atol=1e-6)
    assert "step" in page.inner_text("#chars-session") and "lstm.h [1,64]" in page.inner_text("#chars-session")
    box.press("Backspace")  # an edit: a new session reads the text again
    np.testing.assert_allclose(_shown_probabilities(page, "the "), _next_char("the "), atol=1e-6)


def test_forking_shows_three_continuations_of_the_typed_text(page: Page) -> None:
    text = page.get_attribute("#chars-probabilities", "data-text")
    assert text
    page.click("#chars-fork")
    page.wait_for_selector("#chars-branches[data-done='3']", timeout=30_000)
    order = np.argsort(-_next_char(text), kind="stable")
    for n, branch in enumerate(page.query_selector_all("#chars-branches .branch")):
        expected = ALPHABET[order[n]]
        while len(expected) < CONTINUATION:
            expected += ALPHABET[int(_next_char(text + expected).argmax())]
        assert branch.get_attribute("data-continuation") == expected


def test_a_played_wave_is_plotted_with_the_predictions(page: Page) -> None:
    page.click("#sensor-wave")
    page.wait_for_selector("#sensor-plot[data-steps='60']", timeout=30_000)
    assert "step" in page.inner_text("#sensor-session")
    if os.environ.get("SEQSERVE_SCREENSHOT"):
        page.screenshot(path=os.environ["SEQSERVE_SCREENSHOT"], full_page=True)
