"""Who is signed in to the dashboard: a Keystone token in a cookie (HttpOnly, SameSite=Strict, Secure over HTTPS,
Path=/dashboard), checked against the API on every page, and the CSRF token every form carries.

The CSRF token is an HMAC of a fixed label keyed by the session's token: only a page of this session can know it
(the cookie is unreadable to scripts and never sent cross-site), every API replica derives the same one without
shared state, and it changes with every login. It reveals nothing of the token it is derived from."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from oasis.web.client import Api

ROOT = "/dashboard"
COOKIE = "oasis_dashboard"
LOGIN_COOKIE = "oasis_dashboard_login"  # the login form's own nonce, against a forged login
_CSRF_LABEL = b"oasis dashboard form"
_LOGIN_LABEL = b"oasis dashboard login"
MAX_FORM_BYTES = 64 * 1024


def _mac(key: str, label: bytes) -> str:
    return hmac.new(key.encode(), label, hashlib.sha256).hexdigest()


def csrf_for(token: str) -> str:
    return _mac(token, _CSRF_LABEL)


def csrf_valid(token: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(csrf_for(token), presented or "")


@dataclass(frozen=True)
class Session:
    token: str = field(repr=False)
    user_name: str
    project_id: str
    project_name: str
    roles: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def csrf(self) -> str:
        return csrf_for(self.token)


def session_of(token: str, body: dict[str, Any]) -> Session:
    t = body.get("token") or {}
    return Session(token, str((t.get("user") or {}).get("name") or ""), str((t.get("project") or {}).get("id") or ""),
                   str((t.get("project") or {}).get("name") or ""),
                   tuple(str(r.get("name")) for r in t.get("roles") or []))


async def load_session(request: Request) -> Session | None:
    """The session of the cookie's token if the API still takes it (an expired or revoked one: None)."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    async with Api.of(request, token) as api:
        response = await api.call("GET", "/v3/auth/tokens", headers={"X-Subject-Token": token})
    if response.status_code != 200:
        return None
    return session_of(token, response.json())


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session(response: Response, request: Request, token: str) -> None:
    response.set_cookie(COOKIE, token, path=ROOT, httponly=True, samesite="strict", secure=_secure(request))


def clear_session(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path=ROOT, httponly=True, samesite="strict", secure=_secure(request))


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


def login_csrf(nonce: str) -> str:
    return _mac(nonce, _LOGIN_LABEL)


def set_login_nonce(response: Response, request: Request, nonce: str) -> None:
    response.set_cookie(LOGIN_COOKIE, nonce, path=ROOT, httponly=True, samesite="strict", secure=_secure(request))


def login_csrf_valid(request: Request, presented: str | None) -> bool:
    nonce = request.cookies.get(LOGIN_COOKIE)
    return bool(nonce and presented) and hmac.compare_digest(login_csrf(nonce or ""), presented or "")


class FormError(Exception):
    """A form body the dashboard cannot read (too big, not a form)."""


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form (what the dashboard's forms send), its last value per name, bounded in size."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/x-www-form-urlencoded", ""):
        raise FormError("The dashboard's forms are sent as application/x-www-form-urlencoded")
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise FormError(f"The form is larger than {MAX_FORM_BYTES // 1024} KiB")
        chunks.append(chunk)
    try:
        return dict(parse_qsl(b"".join(chunks).decode(), keep_blank_values=True, max_num_fields=1000))
    except (UnicodeDecodeError, ValueError) as e:
        raise FormError(f"The form could not be read: {e}") from None


def safe_next(target: str | None) -> str:
    """Where to go after the login: a dashboard path only (never another site: an open redirect)."""
    if target and (target == ROOT or target.startswith(ROOT + "/")) and "//" not in target and "\\" not in target \
            and ".." not in target:
        return target
    return ROOT + "/"
