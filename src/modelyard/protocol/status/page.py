"""The status page's two routes: ``GET /`` and ``GET /v2/status`` (docs/status-page.md).

``/`` is one HTML document with its style and script inline (``index.html``, ``status.css``,
``status.js`` beside this module, shipped in the package: no build step, nothing fetched from
elsewhere). It holds no data, so it is served to anyone, like the health probes; its script
polls ``/v2/status``, which names every model as ``/metrics`` does and so takes the same
access policy (a bearer token when ``--auth-token-file`` is on; the page asks for one).

The page is sent with a Content-Security-Policy that allows only its own inline script and
style (by hash) and requests to this server, and the script writes every value with
``textContent``: a model name or an error text can never become markup.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from importlib import resources

import orjson

from modelyard.protocol._http import JSON, HttpRequest, HttpResponse, Route, dispatch
from modelyard.protocol.errors import v2_error
from modelyard.protocol.status.board import StatusBoard

PAGE_PATH = "/"
STATUS_PATH = "/v2/status"
PATHS = frozenset({PAGE_PATH, STATUS_PATH})

_HTML = b"text/html; charset=utf-8"


class StatusRoutes:
    """Route table plus the two handlers."""

    def __init__(self, board: StatusBoard) -> None:
        self.board = board
        self.table = [
            Route("GET", re.compile(re.escape(PAGE_PATH)), StatusRoutes.page),
            Route("GET", re.compile(re.escape(STATUS_PATH)), StatusRoutes.status),
        ]

    async def handle(self, request: HttpRequest) -> HttpResponse:
        return await dispatch(self, self.table, request, v2_error)

    async def page(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        body, policy = page_document()
        return HttpResponse(
            200,
            body,
            _HTML,
            [
                (b"content-security-policy", policy),
                (b"x-content-type-options", b"nosniff"),
                (b"x-frame-options", b"DENY"),
                (b"referrer-policy", b"no-referrer"),
                (b"cache-control", b"no-cache"),
            ],
        )

    async def status(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        body = orjson.dumps(self.board.report())
        return HttpResponse(200, body, JSON, [(b"cache-control", b"no-store")])


@functools.cache
def page_document() -> tuple[bytes, bytes]:
    """The page with its style and script inlined, and the Content-Security-Policy that
    admits exactly those two (built once, on the first request)."""
    files = resources.files(__package__)
    html = files.joinpath("index.html").read_text(encoding="utf-8")
    style = files.joinpath("status.css").read_text(encoding="utf-8")
    script = files.joinpath("status.js").read_text(encoding="utf-8")
    html = html.replace("/*STYLE*/", style).replace("/*SCRIPT*/", script)
    policy = (
        "default-src 'none'; "
        f"script-src '{_digest(script)}'; style-src '{_digest(style)}'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return html.encode(), policy.encode()


def _digest(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
