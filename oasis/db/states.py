"""The names a row's `status` and `op` take: Sahara's status names for clusters, oasis's for sites, and the
operations each model's engine machine knows (oasis/engine/*.py declare their steps). StrEnums, so a value is
also the plain string that the database and the API hold."""
from __future__ import annotations

from enum import StrEnum


class ClusterStatus(StrEnum):
    VALIDATING = "Validating"
    SPAWNING = "Spawning"
    WAITING = "Waiting"
    PREPARING = "Preparing"
    CONFIGURING = "Configuring"
    STARTING = "Starting"
    ACTIVE = "Active"
    DECOMMISSIONING = "Decommissioning"
    SCALING_SPAWNING = "Scaling: Spawning"
    SCALING_WAITING = "Scaling: Waiting"
    SCALING_PREPARING = "Scaling: Preparing"
    DELETING = "Deleting"
    ERROR = "Error"


class ClusterOp(StrEnum):
    CREATE = "create"
    SCALE = "scale"
    DELETE = "delete"
    UPDATE_KEYPAIR = "update_keypair"
    START_CONNECT = "start_connect"  # an Active cluster's on-demand Spark Connect server (oasis/gateway/starting.py)


# The key of a cluster row's spec that says its on-demand Spark Connect server was started (START_CONNECT done).
CONNECT_STARTED = "connect_started"


class JobOp(StrEnum):
    RUN = "run"
    CANCEL = "cancel"
    DELETE = "delete"
    SUSPEND = "suspend"
    RESUME = "resume"


class SiteStatus(StrEnum):
    DEPLOYING = "Deploying"
    SCALING = "Scaling"
    UPDATING = "Updating"
    ACTIVE = "Active"
    DELETING = "Deleting"
    ERROR = "Error"


class SiteOp(StrEnum):
    DEPLOY = "deploy"
    SCALE = "scale"
    UPDATE = "update"
    DELETE = "delete"
