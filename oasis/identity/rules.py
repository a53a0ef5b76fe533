"""The policy rule table: for each action of the route table (`cluster:create`), the name oslo.policy knows it by
and who may take it by default.

Names are Sahara's. Sahara's v1.1 API checks `data-processing:clusters:create`, `…:get_all`, `…:modify` and so on
(the "plural" names, which also name oasis's own resources, in the same style); Sahara's v2 API checks
`data-processing:cluster:create`, `…:list`, `…:update`. Both are rules here: a v1.x route checks the plural name,
a v2 route Sahara's v2 name where Sahara had one, and every v2 name defaults to `rule:<its plural name>`, so one
override of `data-processing:clusters:create` governs both APIs (and one of the v2 name, only v2).
"""
from __future__ import annotations

from dataclasses import dataclass

# The three base rules every action's default refers to; a policy file may redefine them too.
ADMIN_RULE, MEMBER_RULE, READER_RULE = "context_is_admin", "project_member", "project_reader"
BASE_RULES: dict[str, tuple[str, str]] = {
    ADMIN_RULE: ("role:admin", "An administrator (the admin role on the token's project)."),
    # Keystone's historical name for the member role counts as member.
    MEMBER_RULE: (f"rule:{ADMIN_RULE} or role:member or role:_member_",
                  "A member of the token's project (or an administrator): may change that project's rows."),
    READER_RULE: (f"rule:{MEMBER_RULE} or role:reader",
                  "A reader of the token's project (or a member or administrator): may list and show only."),
}
ADMIN, MEMBER, READER = f"rule:{ADMIN_RULE}", f"rule:{MEMBER_RULE}", f"rule:{READER_RULE}"

PREFIX = "data-processing:"


@dataclass(frozen=True)
class Rule:
    action: str  # the route table's action
    name: str  # the plural-style name: checked by v1.x routes, and by v2 routes without a v2 name
    default: str  # ADMIN, MEMBER or READER
    description: str
    v2: str | None = None  # Sahara's v2 name, checked by v2 routes; defaults to `rule:<name>`


def _crud(action: str, plural: str, singular: str | None, what: str, *, create: str = "create",
          update: str = "modify", v2_create: str = "create", writer: str = MEMBER) -> list[Rule]:
    """The five rules of a resource listed, shown, created, updated and deleted as Sahara's are."""
    def v2(verb: str) -> str | None:
        return f"{PREFIX}{singular}:{verb}" if singular else None
    p = f"{PREFIX}{plural}:"
    return [Rule(f"{action}:list", p + "get_all", READER, f"List {what}s.", v2("list")),
            Rule(f"{action}:get", p + "get", READER, f"Show a {what}.", v2("get")),
            Rule(f"{action}:create", p + create, writer, f"Create a {what}.", v2(v2_create)),
            Rule(f"{action}:update", p + update, writer, f"Update a {what}.", v2("update")),
            Rule(f"{action}:delete", p + "delete", writer, f"Delete a {what}.", v2("delete"))]


RULES: tuple[Rule, ...] = (
    # plugins
    Rule("plugin:list", PREFIX + "plugins:get_all", READER, "List plugins.", PREFIX + "plugin:list"),
    Rule("plugin:get", PREFIX + "plugins:get", READER, "Show a plugin.", PREFIX + "plugin:get"),
    Rule("plugin:get-version", PREFIX + "plugins:get_version", READER, "Show a plugin's version.",
         PREFIX + "plugin:get-version"),
    Rule("plugin:update", PREFIX + "plugins:patch", ADMIN, "Update a plugin's labels (every project's).",
         PREFIX + "plugin:update"),
    Rule("plugin:convert-config", PREFIX + "plugins:convert_config", MEMBER,
         "Convert a plugin's configuration file into a cluster template (v1.x)."),
    Rule("job-type:list", PREFIX + "job-types:get_all", READER, "List job types.", PREFIX + "job-type:list"),
    # the image registry: shared by every project, so changed by administrators
    Rule("image:list", PREFIX + "images:get_all", READER, "List registered images.", PREFIX + "image:list"),
    Rule("image:get", PREFIX + "images:get", READER, "Show an image.", PREFIX + "image:get"),
    Rule("image:register", PREFIX + "images:register", ADMIN, "Register an image.", PREFIX + "image:register"),
    Rule("image:unregister", PREFIX + "images:unregister", ADMIN, "Unregister an image.",
         PREFIX + "image:unregister"),
    Rule("image:add-tags", PREFIX + "images:add_tags", ADMIN, "Add tags to an image (v1.x)."),
    Rule("image:remove-tags", PREFIX + "images:remove_tags", ADMIN, "Remove tags from an image.",
         PREFIX + "image:remove-tags"),
    Rule("image:get-tags", PREFIX + "images:get_tags", READER, "Show an image's tags.", PREFIX + "image:get-tags"),
    Rule("image:set-tags", PREFIX + "images:set_tags", ADMIN, "Set an image's tags.", PREFIX + "image:set-tags"),
    # templates
    *_crud("node_group_template", "node-group-templates", "node-group-template", "node group template"),
    *_crud("cluster_template", "cluster-templates", "cluster-template", "cluster template"),
    # clusters
    *_crud("cluster", "clusters", "cluster", "cluster"),
    Rule("cluster:scale", PREFIX + "clusters:scale", MEMBER, "Scale a cluster.", PREFIX + "cluster:scale"),
    # it hands over the cluster's credentials: a member's, not a reader's
    Rule("cluster:client-config:execute", PREFIX + "clusters:client_config", MEMBER,
         "Get a cluster's client configuration, with its credentials."),
    # Spark Connect runs the caller's code on the cluster: a member's, not a reader's (oasis.gateway)
    Rule("cluster:connect:execute", PREFIX + "clusters:connect", MEMBER,
         "Use a Spark cluster's Spark Connect server through the gateway."),
    # EDP
    *_crud("job-binary", "job-binaries", "job-binary", "job binary"),
    Rule("job-binary:get-data", PREFIX + "job-binaries:get_data", READER, "Download a job binary's data.",
         PREFIX + "job-binary:get-data"),
    # Sahara's v2 has no job binary internals: oasis serves them on v2 under the v1.1 names
    *_crud("job-binary-internal", "job-binary-internals", None, "job binary internal"),
    Rule("job-binary-internal:get-data", PREFIX + "job-binary-internals:get_data", READER,
         "Download a job binary internal's data."),
    *_crud("data-source", "data-sources", "data-source", "data source", create="register", v2_create="register"),
    # v1.1 calls job templates "jobs"
    *_crud("job-template", "jobs", "job-template", "job template"),
    Rule("job-template:get-config-hints", PREFIX + "jobs:get_config_hints", READER,
         "Show the configuration hints of a job type.", PREFIX + "job-template:get-config-hints"),
    # v1.1 calls jobs "job executions"; v2 runs one with POST /jobs, v1.1 with POST /jobs/{id}/execute
    Rule("job:list", PREFIX + "job-executions:get_all", READER, "List jobs.", PREFIX + "job:list"),
    Rule("job:get", PREFIX + "job-executions:get", READER, "Show a job.", PREFIX + "job:get"),
    Rule("job:execute", PREFIX + "jobs:execute", MEMBER, "Run a job.", PREFIX + "job:execute"),
    Rule("job:update", PREFIX + "job-executions:modify", MEMBER, "Update a job (cancel, suspend, resume, share).",
         PREFIX + "job:update"),
    Rule("job:delete", PREFIX + "job-executions:delete", MEMBER, "Delete a job.", PREFIX + "job:delete"),
    Rule("job:get-logs", PREFIX + "job-executions:get_logs", READER, "Read a job's logs."),
    Rule("job:get-history", PREFIX + "job-executions:get_history", READER,
         "List and read what a job left behind (Spark event logs, the Dask performance report)."),
    # oasis's own: sites and exports (every project's hosts: administrators), keypairs, identity
    Rule("site:list", PREFIX + "sites:get_all", READER, "List sites."),
    Rule("site:get", PREFIX + "sites:get", READER, "Show a site."),
    Rule("site:register", PREFIX + "sites:register", ADMIN, "Register sites from a manifest."),
    Rule("site:deploy", PREFIX + "sites:deploy", ADMIN, "Deploy a site from a manifest."),
    Rule("site:scale", PREFIX + "sites:scale", ADMIN, "Add or remove a site's hosts."),
    Rule("site:update", PREFIX + "sites:update", ADMIN, "Update a site to a new bundle."),
    Rule("site:delete", PREFIX + "sites:delete", ADMIN, "Delete a site."),
    Rule("export:create", PREFIX + "exports:create", ADMIN, "Export the control plane's bundle."),
    Rule("export:list", PREFIX + "exports:get_all", ADMIN, "List the bundle versions."),
    Rule("export:get", PREFIX + "exports:get", ADMIN, "Read a bundle version."),
    # a project's limits: set by administrators, read by the project's own readers (the handler refuses others)
    Rule("quota:get", PREFIX + "quotas:get", READER, "Show a project's quota and usage (one's own; any: admin)."),
    Rule("quota:update", PREFIX + "quotas:update", ADMIN, "Set a project's quota."),
    # workflows: DAGs of job templates and their runs (oasis/api/workflows.py)
    Rule("workflow:list", PREFIX + "workflows:get_all", READER, "List workflows."),
    Rule("workflow:get", PREFIX + "workflows:get", READER, "Show a workflow."),
    Rule("workflow:create", PREFIX + "workflows:create", MEMBER, "Create a workflow."),
    Rule("workflow:delete", PREFIX + "workflows:delete", MEMBER, "Delete a workflow."),
    Rule("workflow:run", PREFIX + "workflows:run", MEMBER, "Run a workflow."),
    Rule("workflow-run:list", PREFIX + "workflow-runs:get_all", READER, "List workflow runs."),
    Rule("workflow-run:get", PREFIX + "workflow-runs:get", READER, "Show a workflow run and its steps."),
    Rule("workflow-run:restart", PREFIX + "workflow-runs:restart", MEMBER,
         "Restart a failed or cancelled workflow run from its unfinished steps."),
    Rule("workflow-run:cancel", PREFIX + "workflow-runs:cancel", MEMBER,
         "Cancel a workflow run: kill its running steps' jobs and run no more of them."),
    # warm pools of ready clusters (oasis/api/pools.py)
    Rule("pool:list", PREFIX + "pools:get_all", READER, "List warm pools."),
    Rule("pool:get", PREFIX + "pools:get", READER, "Show a warm pool and its clusters."),
    Rule("pool:create", PREFIX + "pools:create", MEMBER, "Create a warm pool of ready clusters."),
    Rule("pool:update", PREFIX + "pools:update", MEMBER, "Resize a warm pool."),
    Rule("pool:delete", PREFIX + "pools:delete", MEMBER, "Delete a warm pool and its unclaimed clusters."),
    Rule("keypair:list", PREFIX + "keypairs:get_all", READER, "List keypairs."),
    Rule("keypair:get", PREFIX + "keypairs:get", READER, "Show a keypair."),
    Rule("keypair:create", PREFIX + "keypairs:create", MEMBER, "Create or import a keypair."),
    Rule("keypair:delete", PREFIX + "keypairs:delete", MEMBER, "Delete a keypair."),
    # a token's own holder may check and revoke it, whatever its role
    Rule("identity:token-validate", PREFIX + "identity:token_validate", READER, "Validate a token."),
    Rule("identity:token-revoke", PREFIX + "identity:token_revoke", READER, "Revoke a token."),
    # Trusts are the caller's own delegations (the handlers allow the trustor, the trustee or an admin), so any
    # role may make, see and delete them, a reader included, as in Keystone.
    Rule("identity:trust-create", PREFIX + "identity:trust_create", READER, "Delegate one's roles to a trustee."),
    Rule("identity:trust-list", PREFIX + "identity:trust_list", READER, "List one's trusts."),
    Rule("identity:trust-get", PREFIX + "identity:trust_get", READER, "Show a trust one is party to."),
    Rule("identity:trust-delete", PREFIX + "identity:trust_delete", READER, "Delete a trust one made."),
    Rule("identity:admin", PREFIX + "identity:admin", ADMIN, "Manage projects, users and role assignments."),
)

BY_ACTION: dict[str, Rule] = {r.action: r for r in RULES}

# Routes that share an action with others but have a name of their own (as in Sahara): (version, path) → action.
BY_ROUTE: dict[tuple[str, str], str] = {
    ("v2", "/sites/{id}/deploy"): "site:deploy",
}
# v1.1's own names for two routes of job:get and job:update.
V1_NAMES: dict[str, tuple[str, str]] = {
    "/job-executions/{id}/refresh-status": (PREFIX + "job-executions:refresh_status", "Refresh a job's status (v1.1)."),
    "/job-executions/{id}/cancel": (PREFIX + "job-executions:cancel", "Cancel a job (v1.1)."),
}
V1_ACTIONS = {"/job-executions/{id}/refresh-status": "job:get", "/job-executions/{id}/cancel": "job:update"}

V1 = ("v1.0", "v1.1")


def rule_name(action: str, version: str, path: str) -> str | None:
    """The policy name a route checks; None: the action has no rule (a route the table misses)."""
    if version in V1 and path in V1_NAMES:
        return V1_NAMES[path][0]
    rule = BY_ACTION.get(BY_ROUTE.get((version, path), action))
    if rule is None:
        return None
    if version in V1 or rule.v2 is None:
        return rule.name
    return rule.v2


def defaults() -> list[tuple[str, str, str]]:
    """Every rule as (name, default check string, description), base rules first."""
    out = [(name, check, desc) for name, (check, desc) in BASE_RULES.items()]
    for rule in RULES:
        out.append((rule.name, rule.default, rule.description))
        if rule.v2:
            out.append((rule.v2, f"rule:{rule.name}", f"{rule.description} (Sahara's v2 name)"))
    for path, (name, desc) in V1_NAMES.items():
        out.append((name, BY_ACTION[V1_ACTIONS[path]].default, desc))
    return out

# Rules checked outside the API's route table: the Spark Connect gateway's (oasis.gateway.routes)
NOT_ROUTES = frozenset({PREFIX + "clusters:connect"})
