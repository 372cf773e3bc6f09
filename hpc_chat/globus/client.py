"""A Globus Compute client, or a clear reason why there cannot be one.

Interactive users log in once (``hpc-chat endpoint login``, a browser flow run by the SDK);
headless clients (batch jobs, CI) use a Globus client identity through the environment
variables ``GLOBUS_COMPUTE_CLIENT_ID`` and ``GLOBUS_COMPUTE_CLIENT_SECRET``. Tokens are handled
by the SDK's own storage; hpc_chat never prints, logs or writes them.
"""

from __future__ import annotations

import sys

from hpc_chat.errors import ExecutorError, HpcChatError

LOGIN_HELP = ("log in once from a terminal with 'hpc-chat endpoint login', or, for batch jobs "
              "and other headless clients, set GLOBUS_COMPUTE_CLIENT_ID and "
              "GLOBUS_COMPUTE_CLIENT_SECRET to a Globus client identity")


class GlobusAuthError(HpcChatError):
    """Not logged in, or the login was refused."""


def globus_app():
    from globus_compute_sdk.sdk.auth.globus_app import get_globus_app

    try:
        return get_globus_app()
    except ValueError as exc:  # e.g. a client secret without its client id
        raise GlobusAuthError(f"Globus Compute credentials are incomplete: {exc}") from None


def make_client(*, interactive: bool | None = None):
    """A ``globus_compute_sdk.Client``; never starts a login flow without a terminal."""
    import globus_sdk
    from globus_compute_sdk import Client

    app = globus_app()
    interactive = sys.stdin.isatty() if interactive is None else interactive
    try:
        # For a client identity this already asks the service for tokens.
        if app.login_required() and not interactive:
            raise GlobusAuthError(f"not logged in to Globus Compute: {LOGIN_HELP}")
        return Client(app=app)
    except globus_sdk.GlobusAPIError as exc:
        raise service_error(exc) from None
    except (globus_sdk.NetworkError, OSError) as exc:
        raise ExecutorError(unreachable_message(exc)) from None


def service_error(exc) -> HpcChatError:
    """A message for an error answer of the service (no request headers, so no tokens)."""
    status = getattr(exc, "http_status", None)
    text = getattr(exc, "message", None) or type(exc).__name__
    if status in (401, 403):
        return GlobusAuthError(f"Globus Compute refused the credentials ({status}: {text}); "
                               f"{LOGIN_HELP}")
    return ExecutorError(f"Globus Compute service error ({status}): {text}")


def unreachable_message(exc) -> str:
    return (f"cannot reach the Globus Compute service ({type(exc).__name__}); check the "
            f"network or proxy settings (HTTPS_PROXY) of this machine")


def login() -> None:
    """Run the SDK's interactive login (prints a URL, asks for the code)."""
    app = globus_app()
    if app.login_required():
        app.login()
