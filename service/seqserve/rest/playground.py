"""The playground page at /ui: static files shipped in the package (`seqserve/playground`), no build
step, nothing fetched from elsewhere. Only the files named here are served."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse, Response

PAGE = Path(__file__).resolve().parent.parent / "playground"
_FILES = {
    "index.html": "text/html; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}


def playground_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/ui")
    async def page_root() -> Response:
        return RedirectResponse("ui/")  # relative, so that a proxy's path prefix is kept; assets resolve under /ui/

    @router.get("/ui/")
    async def page() -> Response:
        return _file("index.html")

    @router.get("/ui/{name}")
    async def asset(name: str) -> Response:
        return _file(name)

    return router


def _file(name: str) -> Response:
    if name not in _FILES:
        raise HTTPException(404, f"the playground has no file {name[:64]!r}")
    # no-cache: a browser revalidates, so a new server version's page is never mixed with an old script.
    return FileResponse(PAGE / name, media_type=_FILES[name], headers={"cache-control": "no-cache"})
