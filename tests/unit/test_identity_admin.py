"""Identity administration's rules (oasis.identity.admin), without HTTP: names are unique, a user of a project is
its member, roles are the policy's, a deleted user's tokens stop working at once."""
from __future__ import annotations

import pytest

from oasis.identity import admin, builtin
from tests.unit.conftest import World


def test_projects_users_and_roles(world: World) -> None:
    with world.db.session() as s:
        project = admin.create_project(s, "p7")
        with pytest.raises(admin.Conflict, match="Duplicate entry found with name p7"):
            admin.create_project(s, "p7")
        assert admin.find_project(s, "p7") is admin.find_project(s, project.id) is project
        user, member_of = admin.create_user(s, "erin", "erin-pass-1", "p7")
        assert member_of is project and admin.roles_on(s, user, project) == ["member"]
        with pytest.raises(admin.Conflict):
            admin.create_user(s, "erin", None)
        with pytest.raises(admin.NotFound, match="Could not find project: nope."):
            admin.create_user(s, "frank", None, "nope")
        assert [u.name for u in admin.users(s, "frank")] == []  # nothing made before the refusal
        admin.grant(s, user, project, "reader")
        admin.check_grant(s, user, project, "reader")
        with pytest.raises(admin.NotFound, match="Could not find role: owner."):
            admin.grant(s, user, project, "owner")
        admin.revoke(s, user, project, "reader")
        with pytest.raises(admin.NotFound, match="role assignment: reader"):
            admin.revoke(s, user, project, "reader")
        token = builtin.issue_token(s, user, project, 1)
        admin.set_password(user, "erin-pass-2")
        assert builtin.authenticate(s, "erin", None, "erin-pass-2") is user
        admin.delete_user(s, user)
        s.flush()
        assert builtin.check_token(s, token) is None
        with pytest.raises(admin.NotFound):
            admin.find_user(s, "erin")


def test_token_project(world: World) -> None:
    with world.db.session() as s:
        alice = admin.find_user(s, "alice")
        assert builtin.token_project(s, alice).name == "p1"  # unscoped: her only project
        assert builtin.token_project(s, alice, project_name="p1").id == world.projects["p1"]
        assert builtin.token_project(s, alice, project_id=world.projects["p2"]) is None  # no role there
        assert builtin.token_project(s, alice, project_name="nope") is None
