"""The operators' web console: its static files (``astara_actors/api/static``) at ``/`` and
``/static/<name>``, served by the API process itself.

A middleware rather than routes, placed before authentication: the files hold no data (every
call the page makes carries the operator's token), and a browser cannot send a bearer token
when it loads a page. It answers ``GET``/``HEAD`` of those paths and nothing else; every other
request goes on to the API unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import falcon

__all__ = ["CONSOLE_PATHS", "Console", "StaticFile", "load_static"]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}

# The page loads only its own files and talks only to its own origin; nothing inline.
_SECURITY = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    """One file of the console, read once at start."""

    body: bytes
    content_type: str
    etag: str


def load_static(package: str = "astara_actors.api") -> dict[str, StaticFile]:
    """Every file under ``<package>/static`` by its URL path (``/`` is ``index.html``)."""
    files: dict[str, StaticFile] = {}
    folder = resources.files(package) / "static"
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if not entry.is_file() or suffix not in _TYPES:
            continue
        body = entry.read_bytes()
        served = StaticFile(body, _TYPES[suffix], hashlib.sha256(body).hexdigest()[:32])
        files[f"/static/{entry.name}"] = served
        if entry.name == "index.html":
            files["/"] = served
    return files


#: The console's paths, as loaded from the package.
CONSOLE_PATHS = frozenset(load_static())


class Console:
    """Middleware: ``GET``/``HEAD`` of ``/`` and ``/static/<name>`` answered from memory,
    ahead of authentication; revalidated by ETag (a new release is picked up at once)."""

    def __init__(self, files: dict[str, StaticFile] | None = None) -> None:
        self._files = files if files is not None else load_static()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.method not in ("GET", "HEAD"):
            return
        served = self._files.get(req.path)
        if served is None:
            return
        resp.complete = True  # no further middleware (authentication), no responder
        resp.set_headers(_SECURITY)
        resp.cache_control = ["no-cache"]
        resp.etag = served.etag
        resp.content_type = served.content_type
        if served.etag in (req.if_none_match or ()):
            resp.status = falcon.HTTP_304
            return
        resp.data = served.body
