"""A channel's own page and its static files, served from a folder in its package.

The page is served with its Content-Security-Policy and without caching, so a deploy's new
script is never paired with an old page; only the files a channel lists are served, so no path
in a request can reach anything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from sanic import Blueprint, response
from sanic.request import Request


def add_page_routes(
    bp: Blueprint, directory: Path, files: Mapping[str, str], security_policy: str
) -> None:
    """``GET /`` serves ``directory/index.html``; ``GET /static/<name>`` serves the ``files``
    (name -> MIME type) in ``directory``, anything else is 404."""

    @bp.route("/", methods=["GET"])
    async def page(request: Request) -> Any:
        if not request.path.endswith("/"):
            # The page loads its assets by relative URL, which needs the trailing slash.
            return response.redirect(request.path + "/")
        return await response.file(
            directory / "index.html",
            headers={
                "Content-Security-Policy": security_policy,
                "Cache-Control": "no-cache",
                "Referrer-Policy": "no-referrer",
                "X-Content-Type-Options": "nosniff",
            },
            mime_type="text/html; charset=utf-8",
        )

    @bp.route("/static/<name>", methods=["GET"])
    async def static(_: Request, name: str) -> Any:
        if name not in files:
            return response.json({"error": "no such file"}, status=404)
        return await response.file(
            directory / name,
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
            mime_type=files[name],
        )
