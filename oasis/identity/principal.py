"""Who is calling: what a valid token resolves to."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Principal:
    user_id: str
    user_name: str
    project_id: str
    project_name: str
    roles: list[str] = field(default_factory=list)
    is_admin: bool = False
    expires_at: datetime | None = None
    issued_at: datetime | None = None
    # Set when the principal acts on a trust (a trust-scoped token, or the engine for a trustor).
    trust_id: str | None = None
