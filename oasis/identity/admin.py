"""Identity administration of the builtin backend: projects, users and their role assignments, as an
administrator manages them (`oasis project|user …`, `openstack project|user|role …` through the Keystone shim).
The rules live here; the HTTP (paths, envelopes, status codes) is oasis.api.keystone's."""
from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from oasis.db.models import Project, RoleAssignment, Token, User
from oasis.identity import builtin
from oasis.identity.policy import MEMBER, ROLES


class NotFound(LookupError):
    """No such project, user, role or assignment; the message is Keystone's ("Could not find user: x.")."""


class Conflict(ValueError):
    """The name is taken."""


def projects(session: Session, name: str | None = None) -> list[Project]:
    stmt = select(Project).order_by(Project.name)
    if name:
        stmt = stmt.where(Project.name == name)
    return list(session.scalars(stmt))


def create_project(session: Session, name: str) -> Project:
    if projects(session, name):
        raise Conflict(f"Conflict occurred attempting to store project - Duplicate entry found with name {name}.")
    return builtin.ensure_project(session, name)


def find_project(session: Session, ref: str) -> Project:
    """A project by id or name."""
    return _find(session, Project, ref, "project")


def users(session: Session, name: str | None = None) -> list[User]:
    stmt = select(User).order_by(User.name)
    if name:
        stmt = stmt.where(User.name == name)
    return list(session.scalars(stmt))


def create_user(session: Session, name: str, password: str | None,
                project_ref: str | None = None) -> tuple[User, Project | None]:
    """A new user; with a project (Keystone's `default_project_id`), a member of it: Keystone would not grant
    the role, but a user of a project is what `oasis user create --project` wants."""
    if users(session, name):
        raise Conflict(f"Conflict occurred attempting to store user - Duplicate entry found with name {name}.")
    project = find_project(session, project_ref) if project_ref else None
    user = builtin.ensure_user(session, name, password)
    if project is not None:
        builtin.assign_role(session, user, project, MEMBER)
    return user, project


def find_user(session: Session, ref: str) -> User:
    """A user by id or name."""
    return _find(session, User, ref, "user")


def set_password(user: User, password: str) -> None:
    user.password_hash = builtin.hash_password(password)


def delete_user(session: Session, user: User) -> None:
    """The user, its tokens (they stop working at once) and its role assignments."""
    session.execute(delete(Token).where(Token.user_id == user.id))
    session.execute(delete(RoleAssignment).where(RoleAssignment.user_id == user.id))
    session.delete(user)


def role(name: str) -> str:
    if name not in ROLES:
        raise NotFound(f"Could not find role: {name}.")
    return name


def roles_on(session: Session, user: User, project: Project) -> list[str]:
    return builtin.roles_of(session, user.id, project.id)


def grant(session: Session, user: User, project: Project, name: str) -> None:
    builtin.assign_role(session, user, project, role(name))


def check_grant(session: Session, user: User, project: Project, name: str) -> None:
    if role(name) not in roles_on(session, user, project):
        raise NotFound(f"Could not find role assignment: {name}.")


def revoke(session: Session, user: User, project: Project, name: str) -> None:
    if not builtin.unassign_role(session, user, project, role(name)):
        raise NotFound(f"Could not find role assignment: {name}.")


def _find(session: Session, model: type[Project] | type[User], ref: str, kind: str) -> Project | User:
    row = session.get(model, ref) or session.scalars(select(model).where(model.name == ref)).first()
    if row is None:
        raise NotFound(f"Could not find {kind}: {ref}.")
    return row
