"""The dashboard's only way to the service: the API itself, called in-process (the same app, through an ASGI
transport), with the user's token. Every list, show and write goes through the API's routing, policy, validation
and error messages; nothing here reads the database."""
from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
from starlette.requests import Request
from starlette.types import ASGIApp


@dataclass
class ApiFailure(Exception):
    """A 4xx or 5xx answer of the API, with its message as the API wrote it."""

    status: int
    name: str
    message: str
    error_id: str | None = None

    def __str__(self) -> str:
        return self.message


def failure_of(response: httpx.Response) -> ApiFailure:
    """Sahara's envelope (`error_name`, `error_message` ending in an Error ID), Keystone's (`error.message`) or
    the router's (`error_message` alone)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    name, message = response.reason_phrase, response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        name = str(body["error"].get("title") or name)
        message = str(body["error"].get("message") or message)
    elif isinstance(body, dict) and "error_message" in body:
        name = str(body.get("error_name") or name)
        message = str(body["error_message"])
    message, _, error_id = message.partition("\nError ID: ")
    return ApiFailure(response.status_code, name, message.strip(), error_id.strip() or None)


class Api:
    """An async client of an ASGI app (the API), as the holder of `token`."""

    def __init__(self, app: ASGIApp, base_url: str, token: str | None) -> None:
        headers = {"X-Auth-Token": token} if token else {}
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url, headers=headers,
                                      timeout=30)
        self.token = token

    @classmethod
    def identity_of(cls, request: Request) -> "Api":
        """Where tokens are issued and revoked (`/v3/auth/tokens`): this API's own Keystone subset, or, with the
        Keystone backend, Keystone itself (the builtin subset then issues none), as Horizon signs in."""
        settings = request.app.state.deps.settings
        if settings.identity_backend != "keystone" or settings.keystone is None:
            return cls.of(request, None)
        keystone = settings.keystone
        api = cls.__new__(cls)
        base = keystone.www_authenticate_uri.rstrip("/").removesuffix("/v3")
        api.http = httpx.AsyncClient(base_url=base, timeout=30, verify=keystone.cafile or True)
        api.token = None
        return api

    @classmethod
    def of(cls, request: Request, token: str | None) -> "Api":
        """The app serving this request, at this request's own base URL (so that anything the API derives from
        the request, a catalog or a link, names this server)."""
        return cls(request.app, str(request.base_url).rstrip("/"), token)

    async def __aenter__(self) -> "Api":
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None,
                   headers: dict[str, str] | None = None) -> httpx.Response:
        """The raw answer, whatever its status."""
        return await self.http.request(method, path, json=json, params=params, headers=headers)

    async def request(self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None) -> dict[str, Any]:
        """The JSON body of a 2xx answer ({} for none); ApiFailure otherwise."""
        response = await self.call(method, path, json=json, params=params, headers=headers)
        if response.status_code >= 400:
            raise failure_of(response)
        return response.json() if response.content else {}

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        return await self.request("GET", path, params=params or None)

    async def listing(self, path: str, key: str) -> list[dict[str, Any]]:
        return list((await self.get(path)).get(key) or [])

    async def post(self, path: str, body: Any) -> dict[str, Any]:
        return await self.request("POST", path, json=body)

    async def put(self, path: str, body: Any) -> dict[str, Any]:
        return await self.request("PUT", path, json=body)

    async def delete(self, path: str) -> dict[str, Any]:
        return await self.request("DELETE", path)
