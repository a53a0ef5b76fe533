"""What every signed-in page shares: the session check (back to the login page when the token is gone), the CSRF
check of every POST, and the API's failures shown as pages of their own status, never as a traceback."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from oasis.web.client import Api, ApiFailure
from oasis.web.render import error_page
from oasis.web.session import COOKIE, ROOT, FormError, Session, clear_session, csrf_valid, load_session, read_form

log = logging.getLogger("oasis.web")

Handler = Callable[[Request, Api, Session], Awaitable[Response]]


def to_login(request: Request, expired: bool) -> Response:
    query = {"next": request.url.path if request.method == "GET" else ROOT}
    if expired:
        query["expired"] = "1"
    response = RedirectResponse(f"{ROOT}/login?{urlencode(query)}", status_code=303)
    if expired:
        clear_session(response, request)
    return response


def failed(request: Request, session: Session | None, e: ApiFailure) -> Response:
    """An answer of the API that is not a success, shown with its own status and message."""
    if e.status == 401:
        return to_login(request, expired=True)
    try:
        phrase = HTTPStatus(e.status).phrase
    except ValueError:
        phrase = "Error"
    return error_page(request, session, e.status, f"{e.status} {phrase}", e.message, e.error_id)


def signed_in(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A page for a signed-in user. On POST the form is read first (request.state.form) and its CSRF token checked."""

    async def endpoint(request: Request) -> Response:
        session = await load_session(request)
        if session is None:
            return to_login(request, expired=bool(request.cookies.get(COOKIE)))
        if request.method == "POST":
            try:
                request.state.form = await read_form(request)
            except FormError as e:
                return error_page(request, session, 400, "400 Bad Request", str(e))
            if not csrf_valid(session.token, request.state.form.get("csrf")):
                return error_page(request, session, 403, "403 Forbidden",
                                  "This form did not come from this dashboard session (its CSRF token is missing "
                                  "or wrong): reload the page and send it again.")
        async with Api.of(request, session.token) as api:
            try:
                return await handler(request, api, session)
            except ApiFailure as e:
                return failed(request, session, e)
            except Exception:  # a bug of the dashboard: logged (path only), shown without a traceback
                log.exception("dashboard error on %s %s", request.method, request.url.path)
                return error_page(request, session, 500, "500 Internal Server Error",
                                  "The dashboard could not show this page.")

    endpoint.__name__ = handler.__name__
    return endpoint
