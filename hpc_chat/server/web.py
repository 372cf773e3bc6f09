"""The browser pages: chat at ``/``, the allocation's state at ``/status``, the login.

Every asset is a file of this package (``server/static/``), served by the server itself: the
pages work on a compute node with no internet, and nothing is built at install time. Pages
hold no data: their scripts ask the API (with the session cookie, :mod:`.web_login`) and
render what comes back with DOM calls that set text, never HTML, so nothing a model writes
can run. The pages' URLs start from the server's ``--root-path`` when it has one (Open
OnDemand's ``/rnode/HOST/PORT``, which the proxy strips), relative otherwise: they work under
such a prefix, with or without its final slash, as at the root.

The pages are sent with a Content-Security-Policy that allows scripts, styles and requests
from this server only (no inline script, no ``eval``, no other origin, no framing).
"""

from __future__ import annotations

import html
import json
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from hpc_chat.server.errors import ApiError
from hpc_chat.server.web_login import CSRF_HEADER, WebLogin

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PAGES = {"/": "chat.html", "/status": "status.html", "/login": "login.html"}
ASSETS = {"chat.js": "text/javascript", "status.js": "text/javascript",
          "login.js": "text/javascript", "render.js": "text/javascript",
          "common.js": "text/javascript", "style.css": "text/css"}
LOGIN_BODY = 4096
OPEN_PATHS = {*PAGES, *(f"/static/{name}" for name in ASSETS),  # no data in them
              "/favicon.ico"}


def page_headers(content_type: str) -> dict[str, str]:
    return {"Content-Type": content_type, "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}


def _asset(name: str) -> bytes:
    return resources.files("hpc_chat.server").joinpath("static", name).read_bytes()


def add_web_routes(app: FastAPI, login: WebLogin) -> None:
    def page(name: str):
        async def serve_page():
            return Response(with_root(_asset(name), login.root_path),
                            headers=page_headers("text/html; charset=utf-8"))
        return serve_page

    for path, name in PAGES.items():
        app.get(path, include_in_schema=False)(page(name))

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():  # none: a browser asks for it on every page
        return Response(status_code=204)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in ASSETS:
            raise ApiError(404, f"no such file: /static/{name}", code="not_found")
        return Response(_asset(name), headers=page_headers(ASSETS[name] + "; charset=utf-8"))

    @app.post("/login", include_in_schema=False)
    async def log_in(request: Request):
        """``{"token": T}`` from the login page (with ``X-HPC-Chat``): the session cookie."""
        if request.headers.get(CSRF_HEADER) != "1":
            raise ApiError(403, f"a login comes from the login page (the {CSRF_HEADER} "
                                f"header)", code="forbidden")
        token = await _login_token(request)
        session = login.redeem(token) if token is not None else None
        if session is None:
            raise ApiError(403, "this login link has been used already or is wrong: the "
                                "current one is in $HPC_CHAT_HOME/server/login-url",
                           code="invalid_login_token")
        return JSONResponse({"ok": True}, headers={"Set-Cookie": login.cookie(
            session, secure=_https(request))})

    @app.post("/logout", include_in_schema=False)
    async def log_out(request: Request):
        login.end(login.session_of(request.cookies))
        return JSONResponse({"ok": True}, headers={"Set-Cookie": login.cleared()})


def with_root(page: bytes, root: str) -> bytes:
    """A page's links from the server's root path when it has one (``--root-path``), so the
    page works at ``/rnode/HOST/PORT`` without its final slash too; ``./`` otherwise. The
    scripts read the same root from the page's ``hpc-chat-root`` meta tag."""
    base = html.escape(f"{root}/" if root else "./", quote=True).encode()
    return page.replace(b'"./', b'"' + base)


async def _login_token(request: Request) -> str | None:
    """The ``token`` of a login's small JSON body; a body over ``LOGIN_BODY`` bytes (a route
    open to all: never read whole), not JSON, or without a string token gives None."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > LOGIN_BODY:
            raise ApiError(413, f"a login body is at most {LOGIN_BODY} bytes",
                           code="request_too_large")
    try:
        token = json.loads(body).get("token")
    except (ValueError, AttributeError, RecursionError):
        return None
    return token if isinstance(token, str) else None


def _https(request: Request) -> bool:
    """Behind a proxy that ends TLS (Open OnDemand), the browser's scheme is forwarded."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
    return request.url.scheme == "https" or forwarded == "https"
