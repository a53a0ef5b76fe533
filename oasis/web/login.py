"""Signing in and out: project credentials (user, password, project; domain Default) or a pasted token, both
exchanged for a token of the dashboard's own through `POST /v3/auth/tokens` (the API's own, or Keystone's with the
Keystone backend); signing out revokes it."""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from oasis.web.client import Api, failure_of
from oasis.web.guard import signed_in
from oasis.web.render import error_page, page
from oasis.web.session import (ROOT, FormError, Session, clear_session, load_session, login_csrf, login_csrf_valid,
                               new_login_nonce, read_form, safe_next, set_login_nonce, set_session)

DOMAIN = {"name": "Default"}


def _form(request: Request, status: int = 200, error: str | None = None, values: dict[str, str] | None = None
          ) -> Response:
    nonce = new_login_nonce()
    notice = "Your session has ended (the token expired or was revoked): sign in again." \
        if request.query_params.get("expired") else None
    response = page(request, "login.html", None, status, error=error, notice=notice, csrf=login_csrf(nonce),
                    values=values or {}, next=safe_next(request.query_params.get("next")))
    set_login_nonce(response, request, nonce)
    return response


async def login_form(request: Request) -> Response:
    if await load_session(request) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return _form(request)


def _password_auth(user: str, password: str, project: str) -> dict[str, Any]:
    auth: dict[str, Any] = {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "password": password, "domain": DOMAIN}}}}
    if project:
        auth["scope"] = {"project": {"name": project, "domain": DOMAIN}}
    return {"auth": auth}


async def login(request: Request) -> Response:
    try:
        form = await read_form(request)
    except FormError as e:
        return _form(request, 400, str(e))
    values = {"username": form.get("username", ""), "project": form.get("project", "")}
    if not login_csrf_valid(request, form.get("csrf")):
        return _form(request, 403, "The sign-in form had expired or did not come from this page: try again.", values)
    pasted = form.get("token", "").strip()
    async with Api.identity_of(request) as api:
        if pasted:
            # The pasted token's own project, then a token of the dashboard's own: signing out revokes only that.
            seen = await api.call("GET", "/v3/auth/tokens", headers={"X-Auth-Token": pasted, "X-Subject-Token": pasted})
            if seen.status_code != 200:
                return _form(request, 401, "That token is not valid (expired, revoked or mistyped).", values)
            project = seen.json()["token"]["project"]["id"]
            body = {"auth": {"identity": {"methods": ["token"], "token": {"id": pasted}},
                             "scope": {"project": {"id": project}}}}
        elif form.get("username") and form.get("password"):
            body = _password_auth(form["username"], form["password"], form.get("project", "").strip())
        else:
            return _form(request, 400, "Give a user name and a password, or paste a token.", values)
        issued = await api.call("POST", "/v3/auth/tokens", json=body)
    if issued.status_code != 201:
        return _form(request, issued.status_code if issued.status_code < 500 else 502, failure_of(issued).message,
                     values)
    response = RedirectResponse(safe_next(form.get("next")), status_code=303)
    set_session(response, request, issued.headers["X-Subject-Token"])
    return response


@signed_in
async def logout(request: Request, api: Api, session: Session) -> Response:
    async with Api.identity_of(request) as identity:
        revoked = await identity.call("DELETE", "/v3/auth/tokens",
                                      headers={"X-Auth-Token": session.token, "X-Subject-Token": session.token})
    if revoked.status_code >= 400:
        failure = failure_of(revoked)
        return error_page(request, session, revoked.status_code, "Signing out failed", failure.message,
                          failure.error_id)
    response = RedirectResponse(f"{ROOT}/login", status_code=303)
    clear_session(response, request)
    return response
