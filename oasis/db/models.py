"""The database: the only state shared between API and engine replicas.

Sahara's many optional fields are kept in one JSON `spec` column per object; columns exist only for what is
filtered, joined, sorted or leased on. Long operations live on their object (`op`, `op_step`, the lease).
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, event,
                        inspect)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from oasis import logconfig
from oasis.db.encrypted import EncryptedJSON, EncryptedText
from oasis.db.states import ClusterStatus, SiteStatus


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def shown_time(value: datetime | None) -> str | None:
    """A time as the API shows it (Sahara's: to the second, no zone; rows hold naive UTC times). isoformat is three
    times strftime's speed, and a page of jobs or clusters formats hundreds."""
    if not value:
        return None
    return value.isoformat(timespec="seconds") if value.tzinfo is None else value.strftime("%Y-%m-%dT%H:%M:%S")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Stamped:
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime, default=None, onupdate=utcnow)


class Owned(Stamped):
    """A row that belongs to a project and may be shared read-only (`is_public`) or locked (`is_protected`)."""

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(80))
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    is_protected: Mapped[bool] = mapped_column(Boolean, default=False)


class Leased:
    """A long operation persisted on its object: what to do, how far it got, and who is doing it."""

    op: Mapped[str | None] = mapped_column(String(16), default=None, index=True)
    op_step: Mapped[str | None] = mapped_column(String(32), default=None)
    op_target: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    # The API request that asked for the operation (`req-<uuid4>`), so that the engine's lines carry it too.
    request_id: Mapped[str | None] = mapped_column(String(40), default=None)


@event.listens_for(Leased, "before_insert", propagate=True)
@event.listens_for(Leased, "before_update", propagate=True)
def _remember_request(_mapper: Any, _conn: Any, row: Leased) -> None:
    """Whoever sets an operation, the request (or the operation) it is done for is kept with it: every write
    of `op` is covered without each handler having to say so."""
    if row.op is not None and inspect(row).attrs.op.history.added:
        row.request_id = logconfig.request_id()


# --- identity -------------------------------------------------------------------------------------------------


class Project(Stamped, Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: uuid.uuid4().hex)
    name: Mapped[str] = mapped_column(String(64), unique=True)


class User(Stamped, Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: uuid.uuid4().hex)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))


class RoleAssignment(Base):
    __tablename__ = "role_assignments"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(32), primary_key=True)


class Token(Base):
    __tablename__ = "tokens"
    # Only a hash of the token is stored: a database dump does not hand out sessions.
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    # A trust-scoped token: it stands for what the trust gives (oasis.identity.builtin.trust_principal), and
    # dies with the trust.
    trust_id: Mapped[str | None] = mapped_column(String(64), default=None, index=True)


class Trust(Base):
    """A user's (the trustor's) delegation of roles on one project to another user (the trustee), as Keystone's
    OS-TRUST has it. Deleting the row is deleting the trust."""

    __tablename__ = "trusts"
    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: uuid.uuid4().hex)
    trustor_user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    trustee_user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    roles: Mapped[list[Any]] = mapped_column(JSON, default=list)
    impersonation: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# --- compute: sites, hosts, images, flavors -------------------------------------------------------------------


class Site(Stamped, Leased, Base):
    __tablename__ = "sites"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(32), default=SiteStatus.ACTIVE)
    cpu_allocation_ratio: Mapped[float] = mapped_column(Float, default=16.0)
    ram_allocation_ratio: Mapped[float] = mapped_column(Float, default=1.5)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # networks, access, proxy_command ...
    # Credentials to reach the site's hosts: never in any API response or log line; encrypted at rest.
    secrets: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON, default=dict)
    status_description: Mapped[str] = mapped_column(Text, default="")
    # Each site operation (deploy, scale, update, delete) is one generation, with its own events.
    generation: Mapped[int] = mapped_column(Integer, default=0)
    bundle_version: Mapped[int | None] = mapped_column(Integer, default=None)


class SiteEvent(Base):
    """What a site operation did, host by host."""

    __tablename__ = "site_events"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(32))
    host_name: Mapped[str | None] = mapped_column(String(64), default=None)
    info: Mapped[str] = mapped_column(Text, default="")
    successful: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Export(Base):
    """One version of the bundle the control plane exports to its sites; every version is kept."""

    __tablename__ = "exports"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bundle: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON, default=dict)  # holds the join secrets
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ControlPlaneSecret(Base):
    """Secrets generated once per control plane (the sites' join token)."""

    __tablename__ = "control_plane_secrets"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(EncryptedText)


class Host(Stamped, Base):
    __tablename__ = "hosts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    # "local" (this machine, no SSH) or "ssh"
    access: Mapped[str] = mapped_column(String(16), default="local")
    address: Mapped[str] = mapped_column(String(64))
    vcpus: Mapped[int] = mapped_column(Integer)
    ram_mb: Mapped[int] = mapped_column(Integer)
    disk_gb: Mapped[int] = mapped_column(Integer)
    port_min: Mapped[int] = mapped_column(Integer, default=20000)
    port_max: Mapped[int] = mapped_column(Integer, default=29999)
    base_dir: Mapped[str] = mapped_column(Text)  # where instance working directories live on the host
    status: Mapped[str] = mapped_column(String(16), default="up")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    __table_args__ = (UniqueConstraint("site_id", "name"),)


class HostPort(Base):
    """One allocated port on one host: the primary key makes a collision impossible across engines."""

    __tablename__ = "host_ports"
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True)
    port: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(36), index=True)


class Image(Stamped, Base):
    __tablename__ = "images"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    username: Mapped[str] = mapped_column(String(64), default="root")
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    runtime: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # python, spark_home, java_home, versions
    registered: Mapped[bool] = mapped_column(Boolean, default=True)


class Flavor(Base):
    __tablename__ = "flavors"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    ram_mb: Mapped[int] = mapped_column(Integer)
    disk_gb: Mapped[int] = mapped_column(Integer)


# --- templates and clusters -----------------------------------------------------------------------------------


class NodeGroupTemplate(Owned, Base):
    __tablename__ = "node_group_templates"
    plugin_name: Mapped[str] = mapped_column(String(32))
    plugin_version: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    __table_args__ = (UniqueConstraint("project_id", "name"),)


class ClusterTemplate(Owned, Base):
    __tablename__ = "cluster_templates"
    plugin_name: Mapped[str] = mapped_column(String(32))
    plugin_version: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    __table_args__ = (UniqueConstraint("project_id", "name"),)


class Cluster(Owned, Leased, Base):
    __tablename__ = "clusters"
    plugin_name: Mapped[str] = mapped_column(String(32))
    plugin_version: Mapped[str] = mapped_column(String(32))
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    cluster_template_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    status: Mapped[str] = mapped_column(String(40), default=ClusterStatus.VALIDATING)
    status_description: Mapped[str] = mapped_column(Text, default="")
    is_transient: Mapped[bool] = mapped_column(Boolean, default=False)
    # The creator's trust to oasis's service user: the engine acts on it after the creator's token expired.
    trust_id: Mapped[str | None] = mapped_column(String(64), default=None)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    management_public_key: Mapped[str] = mapped_column(Text, default="")
    # Never serialised by any API view; encrypted at rest.
    management_private_key: Mapped[str] = mapped_column(EncryptedText, default="")
    # The cluster's own credentials (CA, certificates, framework secrets): never serialised by any API view;
    # encrypted at rest.
    secrets: Mapped[dict[str, Any] | None] = mapped_column(EncryptedJSON, default=dict)
    # The warm pool (ClusterPool) that holds the cluster until a create claims it; None: a user's cluster.
    pool_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    # The list's default order, read from an index for a project's rows and for the public ones (oasis.api.query)
    __table_args__ = (UniqueConstraint("project_id", "name"),
                      Index("ix_clusters_project_created", "project_id", "created_at", "id"),
                      Index("ix_clusters_public_created", "is_public", "created_at", "id"))


class NodeGroup(Stamped, Base):
    __tablename__ = "node_groups"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    count: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # flavor_id, node_processes, node_configs ...


class Instance(Stamped, Base):
    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    node_group_id: Mapped[str] = mapped_column(ForeignKey("node_groups.id", ondelete="CASCADE"), index=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(80))
    internal_ip: Mapped[str] = mapped_column(String(64))
    management_ip: Mapped[str] = mapped_column(String(64))
    workdir: Mapped[str] = mapped_column(Text)
    ports: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    vcpus: Mapped[int] = mapped_column(Integer)
    ram_mb: Mapped[int] = mapped_column(Integer)
    disk_gb: Mapped[int] = mapped_column(Integer)
    # active, or decommission when a scale-down picked it
    state: Mapped[str] = mapped_column(String(16), default="active")
    # The Unix user its processes run as on the host ({"name", "uid", "gid"}); None: the agent's own user.
    owner: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class ProvisionStep(Stamped, Base):
    __tablename__ = "provision_steps"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(String(64))
    step_name: Mapped[str] = mapped_column(String(128))
    step_type: Mapped[str] = mapped_column(String(64))
    total: Mapped[int] = mapped_column(Integer)
    successful: Mapped[bool | None] = mapped_column(Boolean, default=None)
    # seconds from the step's start to its end, for the demo's timings
    duration: Mapped[float | None] = mapped_column(Float, default=None)


class ProvisionEvent(Stamped, Base):
    __tablename__ = "provision_events"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    step_id: Mapped[str] = mapped_column(ForeignKey("provision_steps.id", ondelete="CASCADE"), index=True)
    node_group_id: Mapped[str | None] = mapped_column(String(36), default=None)
    instance_id: Mapped[str | None] = mapped_column(String(36), default=None)
    instance_name: Mapped[str | None] = mapped_column(String(80), default=None)
    event_info: Mapped[str | None] = mapped_column(Text, default=None)
    successful: Mapped[bool] = mapped_column(Boolean, default=True)


# --- EDP ------------------------------------------------------------------------------------------------------


class JobBinaryInternal(Owned, Base):
    """Bytes of an `internal-db://` binary live in the object store under `object_key`, not in this table."""

    __tablename__ = "job_binary_internals"
    datasize: Mapped[int] = mapped_column(Integer)
    object_key: Mapped[str] = mapped_column(Text)
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_job_binary_internals_project_id_name"),)


class JobBinary(Owned, Base):
    __tablename__ = "job_binaries"
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # credentials: never returned
    __table_args__ = (UniqueConstraint("project_id", "name"),)


class DataSource(Owned, Base):
    __tablename__ = "data_sources"
    type: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    credentials: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # never returned
    __table_args__ = (UniqueConstraint("project_id", "name"),)


class JobTemplate(Owned, Base):
    __tablename__ = "job_templates"
    type: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    mains: Mapped[list[Any]] = mapped_column(JSON, default=list)
    libs: Mapped[list[Any]] = mapped_column(JSON, default=list)
    interface: Mapped[list[Any]] = mapped_column(JSON, default=list)
    __table_args__ = (UniqueConstraint("project_id", "name"),)


class Job(Stamped, Leased, Base):
    """A job execution (Sahara v2 "job", v1.1 "job execution")."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    job_template_id: Mapped[str] = mapped_column(String(36), index=True)
    cluster_id: Mapped[str | None] = mapped_column(String(36), index=True)
    input_id: Mapped[str | None] = mapped_column(String(36), default=None)
    output_id: Mapped[str | None] = mapped_column(String(36), default=None)
    job_configs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    interface: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(24), default="PENDING", index=True)
    engine_job_id: Mapped[str | None] = mapped_column(String(128), default=None)
    return_code: Mapped[int | None] = mapped_column(Integer, default=None)
    start_time: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    end_time: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    # as a job's: a run is its project's (never public); the columns let the shared queries treat it as the others
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    is_protected: Mapped[bool] = mapped_column(Boolean, default=False)
    data_source_urls: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # where the launcher keeps the job on the master instance: {"instance_id", "dir"}
    runtime: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    is_protected: Mapped[bool] = mapped_column(Boolean, default=False)
    # The creator's trust, for a job whose end leads to more work (its transient cluster's deletion).
    trust_id: Mapped[str | None] = mapped_column(String(64), default=None)
    # The job's proxy user where a proxy domain is set (oasis/identity/proxy.py): {"user_id", "name",
    # "password", "trust_id"}; encrypted, never shown.
    proxy: Mapped[dict[str, Any] | None] = mapped_column(EncryptedJSON, default=None)
    # The list's default order (as clusters'); a page of clusters counts their running jobs (cluster, status); a
    # data source's deletion looks for the jobs that read or write it.
    __table_args__ = (Index("ix_jobs_project_created", "project_id", "created_at", "id"),
                      Index("ix_jobs_public_created", "is_public", "created_at", "id"),
                      Index("ix_jobs_cluster_status", "cluster_id", "status"),
                      Index("ix_jobs_input_id", "input_id"), Index("ix_jobs_output_id", "output_id"))


class PluginLabel(Base):
    """An administrator's override of a mutable plugin label (Sahara's `plugin_data`): `version` is "" for the
    plugin's own labels, else the version the override is for."""

    __tablename__ = "plugin_labels"
    plugin_name: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    label: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Keypair(Base):
    """A user's SSH public key, by name per project (what Nova's keypairs are to Sahara's `user_keypair_id`).
    Only the public half is stored."""

    __tablename__ = "keypairs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(255))
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("project_id", "name"),)


class Heartbeat(Base):
    """Engines alive now: each writes its row every second from a thread of its own. An operation leased by an
    engine whose row has gone stale is free at once (see engine/leases.py); work is shared out over this list."""

    __tablename__ = "engine_heartbeats"
    engine_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class PeriodicRun(Base):
    """Who did one period's run of a periodic task: the insert of this row is the claim, so each period's run is
    done by exactly one engine however many run."""

    __tablename__ = "periodic_runs"
    task: Mapped[str] = mapped_column(String(80), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)  # the period's number since the epoch
    engine_id: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class ProjectQuota(Base):
    """A project's limits (oasis/db/quotas.py): a column per key, NULL where the deployment's default applies,
    -1 for unlimited. The row is also the project's quota lock: every create or scale that a limit bounds locks it
    before it counts, so one exists for every project that ever asked (made with its first bounded request)."""

    __tablename__ = "project_quotas"
    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    clusters: Mapped[int | None] = mapped_column(Integer, default=None)
    instances: Mapped[int | None] = mapped_column(Integer, default=None)
    vcpus: Mapped[int | None] = mapped_column(Integer, default=None)
    ram_mb: Mapped[int | None] = mapped_column(Integer, default=None)
    volume_gb: Mapped[int | None] = mapped_column(Integer, default=None)
    running_jobs: Mapped[int | None] = mapped_column(Integer, default=None)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime, default=None, onupdate=utcnow)


# --- workflows (oasis/edp/workflow.py) ------------------------------------------------------------------------


class Workflow(Owned, Base):
    """A DAG of job templates: `spec` holds its steps, placement, parameters and description."""

    __tablename__ = "workflows"
    description: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    __table_args__ = (UniqueConstraint("project_id", "name"),)


class WorkflowRun(Stamped, Leased, Base):
    """One run of a workflow: the template as it was (`spec`), its parameter values, a record per step
    (`steps`, by name), the cluster it runs on (made for it when `managed`) and the trust it acts on."""

    __tablename__ = "workflow_runs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    workflow_id: Mapped[str] = mapped_column(String(36), index=True)
    workflow_name: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(24), default="PENDING", index=True)
    status_description: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    steps: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    cluster_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    managed: Mapped[bool] = mapped_column(Boolean, default=False)
    trust_id: Mapped[str | None] = mapped_column(String(64), default=None)
    start_time: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    end_time: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    # as a job's: a run is its project's (never public); the columns let the shared queries treat it as the others
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    is_protected: Mapped[bool] = mapped_column(Boolean, default=False)


# --- warm pools (oasis/db/pools.py) ---------------------------------------------------------------------------


class ClusterPool(Owned, Base):
    """A project's pool of `size` ready clusters of one cluster template on one site: a create that matches it
    claims one (oasis/db/pools.py), and the engine refills it (oasis/engine/pools.py). `spec` holds what the API
    validated when the pool was made (the create request over the template, its node groups), from which the
    refill writes each pooled cluster; `trust_id` is the creator's trust, which the refill acts on."""

    __tablename__ = "cluster_pools"
    cluster_template_id: Mapped[str] = mapped_column(String(36), index=True)
    site_id: Mapped[str] = mapped_column(String(36))
    size: Mapped[int] = mapped_column(Integer)
    # Ready (all of size Active), Filling, Waiting (for quota), Error (the refill cannot go on)
    status: Mapped[str] = mapped_column(String(24), default="Filling")
    status_description: Mapped[str] = mapped_column(Text, default="")
    max_age: Mapped[int | None] = mapped_column(Integer, default=None)  # seconds a pooled cluster is kept
    serial: Mapped[int] = mapped_column(Integer, default=0)  # the number of the last pooled cluster written
    trust_id: Mapped[str | None] = mapped_column(String(64), default=None)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    __table_args__ = (UniqueConstraint("project_id", "name"),)
