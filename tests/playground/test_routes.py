"""/ui serves the playground's own files, and nothing else, to anyone: the page holds no data and
sends the key a person gives it with each call (the APIs it calls still need the key)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from helpers.onnx_models import write_lstm_model
from helpers.server import running_server


@pytest.mark.parametrize("keys", [False, True], ids=["keys off", "keys on"])
def test_the_page_is_served_with_its_files_only(tmp_path: Path, keys: bool) -> None:
    write_lstm_model(tmp_path / "store", "lstm", 1, stateful=True)
    env = {}
    if keys:
        (tmp_path / "keys").write_text("alice:alice-key-0123456789abcdef\n")
        env["SEQSERVE_API_KEYS_FILE"] = str(tmp_path / "keys")
    with (
        running_server(tmp_path / "store", env=env) as server,
        httpx.Client(base_url=f"http://{server.http_url}") as client,
    ):
        assert client.get("/ui").headers["location"] == "ui/"
        page = client.get("/ui/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="playground.js">' in page.text and "http" not in page.text.split("<body>")[1]
        script = client.get("/ui/playground.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert client.get("/ui/playground.css").headers["content-type"].startswith("text/css")
        for missing in ("/ui/nope.js", "/ui/__init__.py"):
            answer = client.get(missing)
            assert answer.status_code == 404 and "/ui/" in answer.json()["error"], missing
        # Decoded, this path leaves /ui/: not the page's, so it needs a key, and is no file either way.
        assert client.get("/ui/..%2Fpyproject.toml").status_code == (401 if keys else 404)
        assert client.post("/v2/repository/index").status_code == (401 if keys else 200)
