"""The README's beam search example, run as written against a real server on the example store,
and checked against a beam search of its own that feeds ONNX Runtime each whole text from zero state."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import httpx
import numpy as np

from helpers.onnx_models import run_directly
from helpers.server import running_server

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- example: beam search -->"
ALPHABET = " abcdehilmnorstw."


def _readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    after = readme[readme.index(MARKER) :]
    return re.search(r"```python\n(.*?)```", after, re.DOTALL).group(1)


def _beam_search(prompt: str, rounds: int, width: int) -> list[tuple[float, str]]:
    def probabilities(text: str) -> np.ndarray:
        x = np.eye(len(ALPHABET), dtype=np.float32)[[ALPHABET.index(c) for c in text]][None]
        return run_directly(ROOT / "model_store" / "chars" / "1", {"chars": x})["next_char"][0]

    beams = [(0.0, prompt)]
    for _ in range(rounds):
        scored = [
            (score + float(np.log(p[i])), text + ALPHABET[i])
            for score, text in beams
            for p in [probabilities(text)]
            for i in range(len(ALPHABET))
        ]
        beams = sorted(scored, key=lambda c: -c[0])[:width]
    return beams


def test_the_readme_beam_search_runs_and_finds_the_beams(tmp_path: Path) -> None:
    code = _readme_example()
    with running_server(ROOT / "model_store", log_dir=tmp_path) as server:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code.replace("localhost:8000", server.http_url), "README.md", "exec"), {})  # noqa: S102
        metrics = httpx.get(f"http://{server.http_url}/metrics").text
    # The example ends every session it made, its forks included.
    assert re.search(r"^seqserve_sessions_active 0\.0$", metrics, re.MULTILINE), metrics[:2000]
    lines = [line.split(None, 1) for line in printed.getvalue().splitlines()]
    got = [(float(score), text) for score, text in lines]
    expected = _beam_search("the c", rounds=10, width=3)
    assert [t for _, t in got] == [t for _, t in expected], printed.getvalue()
    np.testing.assert_allclose([s for s, _ in got], [s for s, _ in expected], atol=1e-3)
