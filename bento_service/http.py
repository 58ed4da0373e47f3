"""ASGI middlewares the service adds through BentoML's public `add_asgi_middleware`.

`JsonBodiesOnly` answers a POST whose body is not plain JSON with a 415 before BentoML parses it: BentoML picks
its parser by Content-Type, and its multipart/form-data parser raises on a malformed body (missing boundary,
garbage), which BentoML turned into a 500. A body with a Content-Encoding (gzip, …) is refused too: BentoML
does not decode it, so it would reach the JSON parser compressed. A request without a Content-Type is read as
JSON, as BentoML does.

`OpenAPIDocument` serves the service's own OpenAPI document at `/docs.json` (which the Swagger page at `/`
renders) instead of the one BentoML generates: see bento_service/openapi.py.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

JSON = "application/json"


def body_refusal(headers: Headers) -> str | None:
    """Why a request body with these headers is refused, or None when it is plain JSON."""
    content_type = headers.get("content-type")
    if content_type is not None and content_type.split(";", 1)[0].strip().lower() != JSON:
        return f"Content-Type must be {JSON}, got {content_type[:100]!r}"
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        return f"Content-Encoding {encoding[:100]!r} is not accepted: send the JSON body uncompressed"
    return None


class JsonBodiesOnly:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            refusal = body_refusal(Headers(scope=scope))
            if refusal is not None:
                # RFC 9110 §15.5.16: the acceptable media type and content codings go with the 415.
                headers = {"Accept": JSON, "Accept-Encoding": "identity"}
                await JSONResponse({"error": refusal}, status_code=415, headers=headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class OpenAPIDocument:
    def __init__(self, app, document: Callable[[], dict], path: str = "/docs.json") -> None:
        self.app = app
        self._document = document
        self._path = path
        self._cached: dict | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and scope["path"] == self._path:
            if self._cached is None:
                self._cached = self._document()
            await JSONResponse(self._cached)(scope, receive, send)
            return
        await self.app(scope, receive, send)
