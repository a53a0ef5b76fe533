"""`oasis keystone register`: what an operator does to put oasis in a Keystone's catalog, printed as the
`openstack` commands (the default) or done (`--apply`, with admin credentials). Doing it again changes nothing.

The service user gets the admin role on its project, as Sahara's had: Keystone lets only a trust's trustor or an
admin delete a trust, and oasis deletes the trusts it was given when the work they were for is done."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from oasis.cli.common import console, fail

app = typer.Typer(help="oasis in a Keystone: the service user, the data-processing service and its endpoints.",
                  no_args_is_help=True)

SERVICE_TYPE = "data-processing"
SERVICE_NAME = "sahara"  # the name clients and dashboards know the service by
INTERFACES = ("public", "internal", "admin")
ROLES = ("member", "reader")  # besides admin, which `keystone-manage bootstrap` makes


@dataclass
class Plan:
    url: str  # oasis's public URL, e.g. http://oasis.example:8386
    user: str
    project: str
    domain: str
    region: str

    @property
    def endpoint(self) -> str:
        # v1.1 with the project, as Sahara registered; v2 is found by version discovery from the same service
        # (the version list at the root), which saharaclient and `openstack dataprocessing` do.
        return f"{self.url.rstrip('/')}/v1.1/%(tenant_id)s"

    def commands(self) -> list[list[str]]:
        cmds = [["openstack", "role", "create", role] for role in ROLES]
        cmds += [["openstack", "project", "create", "--domain", self.domain, self.project],
                 ["openstack", "user", "create", "--domain", self.domain, "--password-prompt", self.user],
                 ["openstack", "role", "add", "--project", self.project, "--project-domain", self.domain,
                  "--user", self.user, "--user-domain", self.domain, "admin"],
                 ["openstack", "service", "create", "--name", SERVICE_NAME, "--description",
                  "oasis data processing", SERVICE_TYPE]]
        cmds += [["openstack", "endpoint", "create", "--region", self.region, SERVICE_TYPE, interface, self.endpoint]
                 for interface in INTERFACES]
        return cmds


def _admin_session(os_cloud: Optional[str], auth_url: Optional[str], username: Optional[str],
                   password: Optional[str], project_name: str, user_domain: str, project_domain: str,
                   cacert: Optional[Path]) -> Any:
    from keystoneauth1 import session as ks_session
    from keystoneauth1.identity import v3

    if os_cloud:
        import openstack.config

        try:
            return openstack.config.OpenStackConfig().get_one(cloud=os_cloud).get_session()
        except Exception as e:  # openstacksdk's errors share no base class worth naming here
            raise fail(f"cannot use cloud {os_cloud!r} of clouds.yaml: {e}", 2) from None
    if not (auth_url and username and password):
        raise fail("--apply needs admin credentials: --os-cloud, or --os-auth-url, --os-username and "
                   "--os-password (or OS_AUTH_URL, OS_USERNAME, OS_PASSWORD)", 2)
    return ks_session.Session(auth=v3.Password(
        auth_url=auth_url, username=username, password=password, project_name=project_name,
        user_domain_name=user_domain, project_domain_name=project_domain), verify=str(cacert) if cacert else True)


def _service_password(password_file: Optional[Path]) -> str:
    if password_file is not None:
        try:
            password = password_file.read_text().strip()
        except OSError as e:
            raise fail(f"cannot read {password_file}: {e.strerror}", 2) from None
    else:
        password = typer.prompt("Password of the service user", hide_input=True, confirmation_prompt=True)
    if not password:
        raise fail("the service user's password is empty", 2)
    return password


def apply(plan: Plan, session: Any, password_file: Optional[Path]) -> list[str]:
    """Make what is missing; what was done, a line each."""
    from keystoneclient.v3 import client as ks_client

    ks = ks_client.Client(session=session, interface="public")
    done: list[str] = []
    roles = {r.name: r for r in ks.roles.list()}
    for name in ("admin", *ROLES):
        if name not in roles:
            roles[name] = ks.roles.create(name)
            done.append(f"created role {name}")
    domain = next(iter(ks.domains.list(name=plan.domain)), None)
    if domain is None:
        raise fail(f"no domain {plan.domain!r} in Keystone", 2)
    project = next(iter(ks.projects.list(name=plan.project, domain=domain)), None)
    if project is None:
        project = ks.projects.create(plan.project, domain=domain)
        done.append(f"created project {plan.project}")
    user = next(iter(ks.users.list(name=plan.user, domain=domain)), None)
    if user is None:
        user = ks.users.create(plan.user, domain=domain, password=_service_password(password_file))
        done.append(f"created user {plan.user}")
    elif password_file is not None:
        ks.users.update(user, password=_service_password(password_file))
        done.append(f"set the password of user {plan.user}")
    if not ks.role_assignments.list(user=user, project=project, role=roles["admin"]):
        ks.roles.grant(roles["admin"], user=user, project=project)
        done.append(f"gave {plan.user} the admin role on {plan.project}")
    service = next(iter(ks.services.list(type=SERVICE_TYPE)), None)
    if service is None:
        service = ks.services.create(SERVICE_NAME, type=SERVICE_TYPE, description="oasis data processing")
        done.append(f"created service {SERVICE_NAME} ({SERVICE_TYPE})")
    existing = {(e.interface, e.region_id if hasattr(e, "region_id") else e.region): e
                for e in ks.endpoints.list(service=service)}
    for interface in INTERFACES:
        endpoint = existing.get((interface, plan.region))
        if endpoint is None:
            ks.endpoints.create(service, plan.endpoint, interface=interface, region=plan.region)
            done.append(f"created the {interface} endpoint {plan.endpoint}")
        elif endpoint.url != plan.endpoint:
            ks.endpoints.update(endpoint, url=plan.endpoint)
            done.append(f"moved the {interface} endpoint to {plan.endpoint}")
    return done


@app.command("register")
def register(
        url: str = typer.Option(..., "--url", help="oasis's public URL, as clients reach it (http://HOST:8386)"),
        user: str = typer.Option("oasis", "--service-user", help="The service user oasis authenticates as"),
        project: str = typer.Option("service", "--service-project", help="The service user's project"),
        domain: str = typer.Option("Default", "--domain", help="The domain of the service user and project"),
        region: str = typer.Option("RegionOne", "--region", help="The endpoints' region"),
        do_apply: bool = typer.Option(False, "--apply", help="Do it (needs admin credentials), instead of printing"),
        password_file: Optional[Path] = typer.Option(None, "--password-file", metavar="FILE",
                                                     help="The service user's password (default: prompted)"),
        os_cloud: Optional[str] = typer.Option(None, "--os-cloud", help="Admin credentials: a cloud of clouds.yaml"),
        os_auth_url: Optional[str] = typer.Option(None, "--os-auth-url", envvar="OS_AUTH_URL"),
        os_username: Optional[str] = typer.Option(None, "--os-username", envvar="OS_USERNAME"),
        os_password: Optional[str] = typer.Option(None, "--os-password", envvar="OS_PASSWORD", show_envvar=False,
                                                  help="Better given as OS_PASSWORD than on the command line"),
        os_project_name: str = typer.Option("admin", "--os-project-name", envvar="OS_PROJECT_NAME"),
        os_user_domain_name: str = typer.Option("Default", "--os-user-domain-name", envvar="OS_USER_DOMAIN_NAME"),
        os_project_domain_name: str = typer.Option("Default", "--os-project-domain-name",
                                                   envvar="OS_PROJECT_DOMAIN_NAME"),
        os_cacert: Optional[Path] = typer.Option(None, "--os-cacert", envvar="OS_CACERT")) -> None:
    """Print (or, with --apply, run) what puts oasis in Keystone's catalog: roles member and reader, the service
    user with the admin role on its project (Keystone lets only an admin or the trustor delete a trust, and oasis
    deletes its trusts when their work is done), the data-processing service and its three endpoints."""
    plan = Plan(url=url, user=user, project=project, domain=domain, region=region)
    if not do_apply:
        console.print("# Run as a Keystone admin; skip what exists already.",
                      markup=False)
        for cmd in plan.commands():
            console.print(shlex.join(cmd), markup=False, soft_wrap=True)
        console.print("# The service user has the admin role on its project: Keystone lets only a trust's trustor "
                      "or an admin delete it, and oasis deletes its trusts when their work is done.", markup=False,
                      soft_wrap=True)
        return
    from keystoneauth1 import exceptions as ks_exc

    session = _admin_session(os_cloud, os_auth_url, os_username, os_password, os_project_name,
                             os_user_domain_name, os_project_domain_name, os_cacert)
    try:
        done = apply(plan, session, password_file)
    except ks_exc.ClientException as e:
        raise fail(f"Keystone refused: {e}", 1) from None
    for line in done or ["nothing to do: oasis is registered"]:
        console.print(line, markup=False)
    console.print(f"the service user {user} has the admin role on {project}: oasis needs it to delete the trusts "
                  "it was given", markup=False)
