"""Pages: the Jinja2 environment (autoescape always on), the page and error responses, and the headers every
dashboard response carries."""
from __future__ import annotations

from typing import Any

import jinja2
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oasis.web.session import ROOT, Session

ENV = jinja2.Environment(loader=jinja2.PackageLoader("oasis.web", "templates"), autoescape=True,
                         trim_blocks=True, lstrip_blocks=True)
ENV.filters["short"] = lambda value: str(value or "")[:8]
ENV.tests["url"] = lambda value: isinstance(value, str) and value.startswith(("http://", "https://"))

# What the browser may do with a dashboard page: load this server's stylesheet and script only (no inline script,
# no other origin), never frame it, never cache it (pages show a project's rows).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
NO_STORE = "no-store"


def page(request: Request, template_name: str, session: Session | None, status: int = 200, **context: Any
         ) -> HTMLResponse:
    html = ENV.get_template(template_name).render(root=ROOT, session=session, path=request.url.path, **context)
    return HTMLResponse(html, status_code=status)


def error_page(request: Request, session: Session | None, status: int, title: str, message: str,
               error_id: str | None = None) -> HTMLResponse:
    return page(request, "error.html", session, status, title=title, message=message, error_id=error_id)


class SecureHeaders:
    """Every dashboard response gets PAGE_HEADERS; pages and streams are not stored, static files revalidate."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith(f"{ROOT}/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in PAGE_HEADERS.items():
                    headers.setdefault(name, value)
                headers["Cache-Control"] = "no-cache" if static else NO_STORE
            await send(message)

        await self.app(scope, receive, send_with_headers)
