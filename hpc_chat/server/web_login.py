"""The browser's way in: a one-time login link, exchanged for a session cookie.

A browser cannot send ``Authorization: Bearer KEY`` by itself, and a key in a URL ends up in
history and logs. So ``serve`` prints (and writes, 0600, to
``$HPC_CHAT_HOME/server/login-url``) a link holding a one-time token, as Jupyter does. The
login page POSTs that token back; the server answers with a random session id in an
``HttpOnly; SameSite=Strict`` cookie scoped to the server's path (``--root-path``: under
Open OnDemand's ``/rnode/HOST/PORT/`` every user's apps share one origin, and a cookie for
``/`` would reach theirs too) and writes a fresh link, so a link read from a terminal, a log
or a shoulder surf is worth nothing once used. ``HPC_CHAT_LOGIN_TOKEN`` sets the first token
(Open OnDemand's generated password), never the command line (``ps`` shows it to everyone).

Sessions live in the server's memory (a restart asks for a new login) and are kept as their
SHA-256, compared in constant time. A cookie alone never authorizes a change: requests other
than GET must also carry the ``X-HPC-Chat`` header, which a cross-site form cannot send and a
cross-site script cannot send without a CORS preflight this server never approves
(:func:`cookie_may`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from pathlib import Path

from hpc_chat.errors import ConfigError
from hpc_chat.util.outputfiles import write_private
from hpc_chat.util.paths import home_subdir

log = logging.getLogger(__name__)

TOKEN_ENV = "HPC_CHAT_LOGIN_TOKEN"
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_\-]{16,128}")
COOKIE = "hpc_chat_session"  # and this server's own suffix (WebLogin.cookie_name)
CSRF_HEADER = "x-hpc-chat"
SESSION_S = 7 * 24 * 3600  # a week: longer than any allocation
MAX_SESSIONS = 64  # the oldest is forgotten beyond this (one user, a few browsers)
SAFE_METHODS = {"GET", "HEAD"}


def login_file() -> Path:
    return home_subdir("server") / "login-url"


class WebLogin:
    """The current one-time token and the sessions it has opened."""

    def __init__(self, root_path: str = "", token: str | None = None):
        self.root_path = normalize_root(root_path)
        # Read once and removed: the workers, the interchange and the engines this server
        # starts inherit its environment, and need no login token.
        given = token if token is not None else os.environ.pop(TOKEN_ENV, None)
        if given is not None and not TOKEN_SHAPE.fullmatch(given):
            raise ConfigError(f"${TOKEN_ENV}: a login token is 16 to 128 letters, digits, "
                              f"'-' or '_'")
        self.chosen = given is not None  # by the caller (Open OnDemand): never printed
        self._token = given or _new_token()
        # Browsers keep cookies per host, not per port: each server's cookie has a name of its
        # own, so two servers a user reaches on one host (two tunnels) keep their sessions.
        self.cookie_name = f"{COOKIE}_{secrets.token_hex(4)}"
        self._sessions: dict[bytes, float] = {}  # sha256(session id) -> expiry
        self.base_url: str | None = None  # where the browser reaches the server, once known

    def link(self, base_url: str | None = None) -> str:
        """The login link: ``BASE/login?token=T`` (just the path when the base is unknown)."""
        base = (base_url or self.base_url or "").rstrip("/")
        return f"{base}{self.root_path}/login?token={self._token}"

    def write_link(self, base_url: str | None = None) -> Path:
        """The link in ``$HPC_CHAT_HOME/server/login-url``, 0600, replaced whole."""
        if base_url is not None:
            self.base_url = base_url
        path = login_file()
        write_private(path, self.link() + "\n")
        return path

    def redeem(self, token: str) -> str | None:
        """A new session id for the current token, which is then replaced (and the file
        rewritten); None for any other token."""
        if not isinstance(token, str) or not TOKEN_SHAPE.fullmatch(token) or \
                not hmac.compare_digest(token.encode(), self._token.encode()):
            return None
        self._token = _new_token()
        if self.base_url is not None:
            try:
                self.write_link()
            except OSError as exc:  # a full quota: this login still works; the next waits
                log.warning("could not write the next login link: %s", exc)
        session = secrets.token_urlsafe(32)
        now = time.time()
        self._sessions = {h: t for h, t in self._sessions.items() if t > now}
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[min(self._sessions, key=self._sessions.get)]
        self._sessions[_digest(session)] = now + SESSION_S
        return session

    def valid(self, session: str | None) -> bool:
        if not session:
            return False
        expiry = self._sessions.get(_digest(session))
        return expiry is not None and expiry > time.time()

    def end(self, session: str | None) -> None:
        if session:
            self._sessions.pop(_digest(session), None)

    def cookie(self, session: str, secure: bool) -> str:
        """The ``Set-Cookie`` value for a session: this server's path only, never to scripts,
        never sent on a request another site starts."""
        return (f"{self.cookie_name}={session}; Path={self.root_path or ''}/; HttpOnly; "
                f"SameSite=Strict; Max-Age={SESSION_S}" + ("; Secure" if secure else ""))

    def cleared(self) -> str:
        return (f"{self.cookie_name}=; Path={self.root_path or ''}/; HttpOnly; "
                f"SameSite=Strict; Max-Age=0")

    def session_of(self, cookies) -> str | None:
        return cookies.get(self.cookie_name)


def cookie_may(method: str, headers) -> bool:
    """Whether a request authorized by the cookie alone may go on: reads always; a change
    only with the ``X-HPC-Chat`` header (the page's own script sends it)."""
    return method in SAFE_METHODS or headers.get(CSRF_HEADER) == "1"


def normalize_root(root: str | None) -> str:
    """``/rnode/host/8080/`` -> ``/rnode/host/8080``; refused unless a plain path."""
    root = (root or "").strip()
    if not root or root == "/":
        return ""
    segments = root.strip("/").split("/")
    if not re.fullmatch(r"(/[A-Za-z0-9._~\-]+)+/?", root) or \
            any(s in (".", "..") for s in segments):
        raise ConfigError(f"--root-path {root!r}: a URL path such as /rnode/HOST/PORT "
                          f"(letters, digits, '.', '-', '_', '~' between slashes)")
    return root.rstrip("/")


def _new_token() -> str:
    return secrets.token_urlsafe(24)


def _digest(session: str) -> bytes:
    return hashlib.sha256(session.encode("utf-8", "replace")).digest()
