"""The builtin identity backend: projects, users, role assignments and bearer tokens in oasis's own database.

Passwords are salted scrypt hashes; tokens are random and only their SHA-256 is stored, so neither a database
dump nor a log line hands out credentials.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from oasis.db.models import Project, RoleAssignment, Token, Trust, User, utcnow
from oasis.db.session import Database
from oasis.identity.base import IdentityError
from oasis.identity.policy import ROLES
from oasis.identity.principal import Principal

__all__ = ["Principal", "hash_password", "verify_password", "ensure_project", "ensure_user", "assign_role",
           "issue_token", "check_token", "revoke_token", "roles_of", "authenticate", "unassign_role", "token_project",
           "SERVICE_USER", "ensure_service_user", "TrustRefused", "make_trust", "valid_trust", "trust_principal",
           "issue_trust_token", "delete_trust", "trusts_of"]

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


def issue_token(session: Session, user: User, project: Project, hours: float, trust: Trust | None = None) -> str:
    """A new bearer token; with `trust`, a trust-scoped one (the user is the trust's trustee), which never outlives
    its trust."""
    now = utcnow()
    # Expired tokens of this user are dropped here, so the table does not grow without bound.
    session.execute(delete(Token).where(Token.user_id == user.id, Token.expires_at < now))
    # The issue time rides in the token (no column for it): the time reported is the time of issue, exactly.
    issued = f".{(now - _EPOCH) // timedelta(microseconds=1):x}"
    token = secrets.token_urlsafe(32) + issued
    while token.startswith("-"):  # `--os-token -abc…` would read as an option on a command line
        token = secrets.token_urlsafe(32) + issued
    expires = now + timedelta(hours=hours)
    if trust is not None and trust.expires_at is not None:
        expires = min(expires, trust.expires_at)
    session.add(Token(id_hash=_digest(token), user_id=user.id, project_id=project.id, expires_at=expires,
                      trust_id=trust.id if trust is not None else None))
    session.flush()
    return token


def check_token(session: Session, token: str) -> Principal | None:
    """The principal a token stands for, or None if it is unknown, expired, or its user has lost every role
    on its project."""
    if not token:
        return None
    # The token with its user and project in one query (every request asks): outer joins, so that a token whose
    # user or project is gone is told apart as before.
    found = session.execute(select(Token, User, Project).outerjoin(User, User.id == Token.user_id)
                            .outerjoin(Project, Project.id == Token.project_id)
                            .where(Token.id_hash == _digest(token))).first()
    if found is None:
        return None
    row, user, project = found
    if row.expires_at <= utcnow():
        return None
    if row.trust_id is not None:
        try:
            principal = trust_principal(session, valid_trust(session, row.trust_id))
        except TrustRefused:  # the trust was deleted, expired, or its trustor lost a delegated role
            return None
        return replace(principal, expires_at=row.expires_at)
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


# --- trusts (Keystone's OS-TRUST) --------------------------------------------------------------------------------

# oasis's own user, the trustee of the trusts oasis makes for work that outlives a token. It has no password
# (nobody can log in as it) and no role: the engine acts on its trusts in-process (BuiltinIdentity.trust_principal),
# reading the same database, so there is no credential of it to keep anywhere.
SERVICE_USER = "oasis"


class TrustRefused(Exception):
    """Keystone's answer to a bad trust request: its status (400, 403, 404) and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def ensure_service_user(session: Session) -> User:
    """The service user, made on the first start; its password is made unusable on every start."""
    user = ensure_user(session, SERVICE_USER, None)
    user.password_hash = UNUSABLE
    session.flush()
    return user


def make_trust(session: Session, trustor: Principal, trustee_user_id: str, project_id: str | None,
               roles: list[str], impersonation: bool, expires_at: datetime | None) -> Trust:
    """A trust from the caller, as Keystone checks one: the caller is the trustor, the trustee exists, the project
    is the caller's token's, each role is one the trustor has there, and it does not expire in the past."""
    if trustor.trust_id is not None:
        raise TrustRefused(403, "You are not authorized to perform the requested action: Redelegation allowed "
                                "for delegated by trust only.")
    if session.get(User, trustee_user_id) is None:
        raise TrustRefused(404, f"Could not find user: {trustee_user_id}.")
    project_id = project_id or trustor.project_id
    if project_id != trustor.project_id:
        raise TrustRefused(403, "You are not authorized to perform the requested action: a trust is for the "
                                "project of the token that creates it.")
    if not roles:
        raise TrustRefused(403, "You are not authorized to perform the requested action: At least one role should "
                                "be specified.")
    held = set(roles_of(session, trustor.user_id, project_id))
    for role in roles:
        if role not in ROLES and role not in held:
            raise TrustRefused(404, f"Could not find role: {role}.")
        if role not in held:
            raise TrustRefused(403, f"You are not authorized to perform the requested action: user "
                                    f"{trustor.user_id} does not have role {role} in project {project_id}.")
    if expires_at is not None and expires_at <= utcnow():
        raise TrustRefused(400, "Invalid input for field 'expires_at': the expiration time is in the past.")
    trust = Trust(trustor_user_id=trustor.user_id, trustee_user_id=trustee_user_id, project_id=project_id,
                  roles=sorted(set(roles)), impersonation=impersonation, expires_at=expires_at)
    session.add(trust)
    session.flush()
    return trust


def valid_trust(session: Session, trust_id: str) -> Trust:
    """The trust if it can be acted on: it exists, has not expired, and its trustor still has every role it
    delegates (else Keystone's 404, or 403 "Trustee has no delegated roles.")."""
    trust = session.get(Trust, trust_id) if trust_id else None
    if trust is None or (trust.expires_at is not None and trust.expires_at <= utcnow()):
        raise TrustRefused(404, f"Could not find trust: {trust_id}.")
    if not set(trust.roles) <= set(roles_of(session, trust.trustor_user_id, trust.project_id)):
        raise TrustRefused(403, "Trustee has no delegated roles.")
    return trust


def trust_principal(session: Session, trust: Trust) -> Principal:
    """Who acts on the trust: the trustor when it impersonates, else the trustee; with the trust's roles only, on
    its project."""
    user = session.get(User, trust.trustor_user_id if trust.impersonation else trust.trustee_user_id)
    project = session.get(Project, trust.project_id)
    if user is None or project is None:
        raise TrustRefused(404, f"Could not find trust: {trust.id}.")
    roles = list(trust.roles)
    return Principal(user_id=user.id, user_name=user.name, project_id=project.id, project_name=project.name,
                     roles=roles, is_admin="admin" in roles, expires_at=trust.expires_at, trust_id=trust.id)


def issue_trust_token(session: Session, user: User, trust_id: str, hours: float) -> str:
    """A trust-scoped token for the trust's trustee (`user`, who authenticated)."""
    trust = valid_trust(session, trust_id)
    if trust.trustee_user_id != user.id:
        raise TrustRefused(403, "User is not a trustee.")
    project = session.get(Project, trust.project_id)
    assert project is not None  # the foreign key cascades a project's deletion to its trusts
    return issue_token(session, user, project, hours, trust)


def delete_trust(session: Session, trust_id: str) -> bool:
    """The trust and every token scoped to it; whether there was one."""
    session.execute(delete(Token).where(Token.trust_id == trust_id))
    return session.execute(delete(Trust).where(Trust.id == trust_id)).rowcount > 0


def trusts_of(session: Session, trustor_user_id: str | None = None, trustee_user_id: str | None = None) -> list[Trust]:
    """Trusts that are not expired, of a trustor or of a trustee (both None: all)."""
    now = utcnow()
    stmt = select(Trust).where(or_(Trust.expires_at.is_(None), Trust.expires_at > now)).order_by(Trust.created_at)
    if trustor_user_id is not None:
        stmt = stmt.where(Trust.trustor_user_id == trustor_user_id)
    if trustee_user_id is not None:
        stmt = stmt.where(Trust.trustee_user_id == trustee_user_id)
    return list(session.scalars(stmt))


class BuiltinIdentity:
    """The `Identity` of oasis's own database (see oasis.identity.base)."""

    name = "builtin"

    def __init__(self, db: Database) -> None:
        self.db = db

    def authenticate_token(self, token: str) -> Principal | None:
        with self.db.session() as s:
            return check_token(s, token)

    def create_trust(self, user_token: str, trustor: Principal, *, roles: list[str] | None = None,
                     expires_at: datetime | None = None, impersonation: bool = True,
                     trustee_user_id: str | None = None) -> str:
        with self.db.session() as s:
            caller = check_token(s, user_token)
            if caller is None or (caller.user_id, caller.project_id) != (trustor.user_id, trustor.project_id):
                raise IdentityError("The token is invalid or has expired: no trust can be made from it")
            # Bootstrap makes it; a database that bootstrap has not run on (a test's) gets it here.
            service = s.scalars(select(User).where(User.name == SERVICE_USER)).first() or ensure_service_user(s)
            try:
                return make_trust(s, caller, trustee_user_id or service.id, caller.project_id,
                                  list(roles) if roles is not None else list(caller.roles), impersonation,
                                  expires_at).id
            except TrustRefused as e:
                raise IdentityError(e.message) from None

    def trust_principal(self, trust_id: str) -> Principal | None:
        with self.db.session() as s:
            try:
                return trust_principal(s, valid_trust(s, trust_id))
            except TrustRefused:
                return None

    def delete_trust(self, trust_id: str) -> None:
        with self.db.session() as s:
            delete_trust(s, trust_id)

    def trust_object_store(self, trust_id: str) -> tuple[str, str] | None:
        return None  # no Swift takes the builtin identity's tokens: swift:// sources bring their own credentials
