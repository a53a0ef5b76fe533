"""The builtin identity backend: projects, users, role assignments and bearer tokens in oasis's own database.

Passwords are salted scrypt hashes; tokens are random and only their SHA-256 is stored, so neither a database
dump nor a log line hands out credentials.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from oasis.db.models import Project, RoleAssignment, Token, User, utcnow
from oasis.db.session import Database
from oasis.identity.policy import ROLES
from oasis.identity.principal import Principal

__all__ = ["Principal", "hash_password", "verify_password", "ensure_project", "ensure_user", "assign_role",
           "issue_token", "check_token", "revoke_token", "roles_of", "authenticate", "unassign_role", "token_project"]

# scrypt cost: ~16 MB and tens of milliseconds per hash; enough to make offline guessing expensive.
_N, _R, _P = 2**14, 8, 1
# A hash that no password verifies: a user created without a password cannot log in until one is set.
UNUSABLE = "!"


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(digest) // 2)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def ensure_project(session: Session, name: str) -> Project:
    project = session.scalars(select(Project).where(Project.name == name)).first()
    if project is None:
        project = Project(name=name)
        session.add(project)
        session.flush()
    return project


def ensure_user(session: Session, name: str, password: str | None) -> User:
    """The user of that name, created if missing. A password given (re)sets it; None leaves it as is (or
    unusable for a new user)."""
    user = session.scalars(select(User).where(User.name == name)).first()
    if user is None:
        user = User(name=name, password_hash=UNUSABLE)
        session.add(user)
    if password is not None:
        user.password_hash = hash_password(password)
    session.flush()
    return user


def assign_role(session: Session, user: User, project: Project, role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    if session.get(RoleAssignment, (user.id, project.id, role)) is None:
        session.add(RoleAssignment(user_id=user.id, project_id=project.id, role=role))
        session.flush()


def unassign_role(session: Session, user: User, project: Project, role: str) -> bool:
    row = session.get(RoleAssignment, (user.id, project.id, role))
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def roles_of(session: Session, user_id: str, project_id: str) -> list[str]:
    return sorted(session.scalars(select(RoleAssignment.role).where(
        RoleAssignment.user_id == user_id, RoleAssignment.project_id == project_id)))


def token_project(session: Session, user: User, project_id: str | None = None,
                  project_name: str | None = None) -> Project | None:
    """The project a new token of the user is for: the one named (by id, else by name) if the user has a role on
    it; with neither, the user's first project by name that it has a role on. None: no such project."""
    if project_id is not None or project_name is not None:
        if project_id is not None:
            project = session.get(Project, project_id)
        else:
            project = session.scalars(select(Project).where(Project.name == project_name)).first()
        return project if project is not None and roles_of(session, user.id, project.id) else None
    return next((p for p in session.scalars(select(Project).order_by(Project.name))
                 if roles_of(session, user.id, p.id)), None)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_EPOCH = datetime(1970, 1, 1)


def issued_at_of(token: str) -> datetime | None:
    """When a token was issued: its last part (microseconds since the epoch, hex). It is part of what is hashed,
    so it cannot be changed without making the token unknown; a token issued before it was there has none."""
    head, dot, tail = token.rpartition(".")
    if not dot or not head or not tail or len(tail) > 16:
        return None
    try:
        return _EPOCH + timedelta(microseconds=int(tail, 16))
    except (ValueError, OverflowError):
        return None


def issue_token(session: Session, user: User, project: Project, hours: float) -> str:
    now = utcnow()
    # Expired tokens of this user are dropped here, so the table does not grow without bound.
    session.execute(delete(Token).where(Token.user_id == user.id, Token.expires_at < now))
    # The issue time rides in the token (no column for it): the time reported is the time of issue, exactly.
    issued = f".{(now - _EPOCH) // timedelta(microseconds=1):x}"
    token = secrets.token_urlsafe(32) + issued
    while token.startswith("-"):  # `--os-token -abc…` would read as an option on a command line
        token = secrets.token_urlsafe(32) + issued
    session.add(Token(id_hash=_digest(token), user_id=user.id, project_id=project.id,
                      expires_at=now + timedelta(hours=hours)))
    session.flush()
    return token


def check_token(session: Session, token: str) -> Principal | None:
    """The principal a token stands for, or None if it is unknown, expired, or its user has lost every role
    on its project."""
    if not token:
        return None
    row = session.get(Token, _digest(token))
    if row is None or row.expires_at <= utcnow():
        return None
    user, project = session.get(User, row.user_id), session.get(Project, row.project_id)
    if user is None or project is None:
        return None
    roles = roles_of(session, user.id, project.id)
    if not roles:
        return None
    return Principal(user_id=user.id, user_name=user.name, project_id=project.id, project_name=project.name,
                     roles=roles, is_admin="admin" in roles, expires_at=row.expires_at,
                     issued_at=issued_at_of(token))


def revoke_token(session: Session, token: str) -> bool:
    return session.execute(delete(Token).where(Token.id_hash == _digest(token))).rowcount > 0


def authenticate(session: Session, user_name: str | None, user_id: str | None, password: str) -> User | None:
    """The user these credentials name, if the password matches."""
    stmt = select(User).where(User.id == user_id) if user_id else select(User).where(User.name == user_name)
    user = session.scalars(stmt).first()
    if user is None:
        # Spend the same time as a real check, so response time does not tell which user names exist.
        verify_password(password, _DUMMY)
        return None
    return user if verify_password(password, user.password_hash) else None


_DUMMY = hash_password(secrets.token_hex(8))


class BuiltinIdentity:
    """The `Identity` of oasis's own database (see oasis.identity.base)."""

    name = "builtin"

    def __init__(self, db: Database) -> None:
        self.db = db

    def authenticate_token(self, token: str) -> Principal | None:
        with self.db.session() as s:
            return check_token(s, token)
