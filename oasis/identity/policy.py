"""Who may do what: oslo.policy over Sahara's rule names (oasis.identity.rules), with defaults by role (admin:
everything; member: its project's rows; reader: list and show only). A policy file (YAML or JSON, as oslo.policy
reads it) overrides any rule. Ownership is not the policy's: the queries keep a project to its own rows.

The enforcer is built once per process and per policy file, and the file is read once, at start: a file that
cannot be used (its syntax, a rule name oasis does not know, a check string oslo.policy cannot parse, a reference
to no rule) is one `PolicyError` line then, never a failure per request. A change to the file takes effect at the
next start."""
from __future__ import annotations

import functools
import logging
from pathlib import Path

from oslo_config import cfg
from oslo_policy import policy as oslo

from oasis.identity import rules
from oasis.identity.principal import Principal

ADMIN, MEMBER, READER = "admin", "member", "reader"
ROLES = (ADMIN, MEMBER, READER)

# What a default check asks for, in the words of a refusal.
_NEEDS = {rules.ADMIN: "the admin role", rules.MEMBER: "the member or admin role on the project",
          rules.READER: "a role (reader, member or admin) on the project"}


class Forbidden(Exception):
    """The policy refuses the action; the message names it and what it needs."""


class PolicyError(Exception):
    """The policy file cannot be used; the message is one line for the operator."""


class _ParseErrors(logging.Handler):
    """oslo.policy logs a check string it cannot parse and treats it as "never": caught here, it is an error."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class Policy:
    """The enforcer and the names of the routes; `authorize` is what the API calls for every request."""

    def __init__(self, policy_file: Path | None = None) -> None:
        self.policy_file = policy_file
        conf = cfg.ConfigOpts()
        conf([], project="oasis", default_config_files=[], default_config_dirs=[])
        # With no file, a path that cannot exist: oslo.policy then searches no directory for a "policy.yaml".
        path = str(policy_file.resolve()) if policy_file is not None else "/nonexistent/oasis-policy.yaml"
        if policy_file is not None and not policy_file.is_file():
            raise PolicyError(f"policy file {policy_file}: no such file")
        self.enforcer = oslo.Enforcer(conf, policy_file=path, use_conf=True)
        conf.set_override("policy_dirs", [], group="oslo_policy")
        self.enforcer.register_defaults([oslo.RuleDefault(name, check, description)
                                         for name, check, description in rules.defaults()])
        self._load()
        self.enforcer.use_conf = False  # read once: no stat of the file, and no reload that could fail, per request
        self._defaults = {name: check for name, check, _ in rules.defaults()}

    def _load(self) -> None:
        where = f"policy file {self.policy_file}" if self.policy_file else "policy defaults"
        parse_errors = _ParseErrors()
        quiet = _ParseErrors()  # oslo.policy's own warnings of what is raised here: not logged a second time
        loggers = [(logging.getLogger("oslo_policy._parser"), parse_errors),
                   (logging.getLogger("oslo_policy.policy"), quiet)]
        for logger, handler in loggers:
            logger.addHandler(handler)
            logger.propagate = False
        try:
            try:
                self.enforcer.load_rules()
            except Exception as e:  # yaml's or oslo.policy's own error: its lines, joined, say what and where
                raise PolicyError(f"{where}: {_one_line(e)}") from None
            if parse_errors.messages:
                raise PolicyError(f"{where}: {parse_errors.messages[0].splitlines()[0]}")
            unknown = sorted(set(self.enforcer.file_rules) - set(self.enforcer.registered_rules))
            if unknown:
                raise PolicyError(f"{where}: unknown rule {', '.join(unknown)} (docs/policy.yaml lists every rule)")
            if not self.enforcer.check_rules():
                raise PolicyError(f"{where}: {'; '.join(dict.fromkeys(quiet.messages))}")
        finally:
            for logger, handler in loggers:
                logger.removeHandler(handler)
                logger.propagate = True

    def authorize(self, principal: Principal, action: str, version: str = "v2", path: str = "") -> None:
        """Raise Forbidden unless the principal may take the action of this route."""
        name = rules.rule_name(action, version, path)
        if name is None:  # the route table has an action this table misses: refused, never a 500
            raise Forbidden(f"Policy doesn't allow {action} to be performed: it has no rule.")
        creds = {"roles": list(principal.roles), "user_id": principal.user_id, "project_id": principal.project_id,
                 "is_admin": principal.is_admin}
        target = {"project_id": principal.project_id, "user_id": principal.user_id}
        if not self.enforcer.enforce(name, target, creds):
            raise Forbidden(f"Policy doesn't allow {name} to be performed. It needs {self.needs(name)}.")

    def needs(self, name: str) -> str:
        """What the rule asks for: in words for the defaults, else its check string as the file gives it."""
        check = str(self.enforcer.rules[name])
        seen = set()
        while check.startswith("rule:") and " " not in check and check not in seen:  # follow a plain reference
            seen.add(check)
            if check in _NEEDS and self._is_default(check[5:]):
                return _NEEDS[check]
            check = str(self.enforcer.rules.get(check[5:], check))
        return f"the rule {check!r}"

    def _is_default(self, base: str) -> bool:
        return str(self.enforcer.rules.get(base)) == str(oslo.RuleDefault(base, self._defaults[base]).check)

    def missing(self, routes: list[tuple[str, str, str]]) -> list[str]:
        """Of (action, version, path) routes, the ones the table gives no rule."""
        return [f"{action} ({version} {path})" for action, version, path in routes
                if rules.rule_name(action, version, path) is None]


def _one_line(e: Exception) -> str:
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return text or type(e).__name__


@functools.lru_cache(maxsize=8)
def load(policy_file: Path | None = None) -> Policy:
    """The process's policy for that file (None: the defaults); built once."""
    return Policy(policy_file)


def authorize(principal: Principal, action: str, version: str = "v2", path: str = "") -> None:
    """Authorize against the defaults (no policy file)."""
    load(None).authorize(principal, action, version, path)


def sees_all_projects(principal: Principal) -> bool:
    return principal.is_admin
