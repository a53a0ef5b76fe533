"""Request bodies as JSON schemas (plain dicts: they also feed the OpenAPI document), after Sahara's
`*_schema.py` validators. v2 names (`plugin_version`) are used here."""
from __future__ import annotations

from typing import Any

from oasis.api.autoscaling import SCHEMA as AUTOSCALING
from oasis.config import MAX_INSTANCES

# Sahara's `valid_name_hostname` and `valid_name` formats. Patterns end in \Z, not $: `$` also matches before a
# final newline, and a name ending in one would pass (and reach host directories and headers).
HOSTNAME = r"^(([a-zA-Z]|[a-zA-Z][a-zA-Z0-9\-]*[a-zA-Z0-9])\.)*([A-Za-z]|[A-Za-z][A-Za-z0-9\-]*[A-Za-z0-9])\Z"
EDP_NAME = r"^[a-zA-Z0-9][a-zA-Z0-9\-_\.]*\Z"

hostname_name = {"type": "string", "minLength": 1, "maxLength": 50, "pattern": HOSTNAME}
edp_name = {"type": "string", "minLength": 1, "maxLength": 50, "pattern": EDP_NAME}
object_id = {"type": "string", "minLength": 1, "maxLength": 64}
optional_id = {"type": ["string", "null"], "maxLength": 64}
text = {"type": ["string", "null"]}
flag = {"type": "boolean"}
configs = {"type": "object", "additionalProperties": {"type": "object"}}  # {target: {name: value}}
simple_config = {"type": "object"}
string_list = {"type": "array", "items": {"type": "string"}}
shares = {"type": "array", "items": {
    "type": "object", "required": ["id"], "additionalProperties": False,
    "properties": {"id": {"type": "string"}, "path": {"type": ["string", "null"]},
                   "access_level": {"enum": ["rw", "ro", None]}}}}

# Sizes are bounded by what a deployment can hold, so that no request makes the API allocate or loop without end.
count = {"type": "integer", "minimum": 0, "maximum": MAX_INSTANCES}
MAX_VOLUMES = 64  # per instance
MAX_VOLUME_GB = 1 << 20  # 1 PB
MAX_NODE_GROUPS = 100

# What a node group template and a node group of a cluster (template) have in common.
NODE_GROUP_FIELDS: dict[str, Any] = {
    "flavor_id": {"type": ["string", "integer"]},
    "image_id": optional_id,
    "node_processes": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    "node_configs": configs,
    "volumes_per_node": {"type": "integer", "minimum": 0, "maximum": MAX_VOLUMES},
    "volumes_size": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_VOLUME_GB},
    "volume_type": text,
    "volumes_availability_zone": text,
    "volume_mount_prefix": text,
    "volume_local_to_instance": flag,
    "floating_ip_pool": text,
    "security_groups": {"type": ["array", "null"], "items": {"type": "string"}},
    "auto_security_group": flag,
    "availability_zone": text,
    "is_proxy_gateway": flag,
    "use_autoconfig": flag,
    "shares": shares,
    "boot_from_volume": flag,
    "boot_volume_type": text,
    "boot_volume_availability_zone": text,
    "boot_volume_local_to_instance": flag,
}

_owned = {"is_public": flag, "is_protected": flag}
_plugin = {"plugin_name": {"type": "string", "minLength": 1}, "plugin_version": {"type": "string", "minLength": 1}}

NODE_GROUP_TEMPLATE_CREATE = {
    "type": "object", "additionalProperties": False,
    "required": ["name", "plugin_name", "plugin_version", "flavor_id", "node_processes"],
    "properties": {"name": hostname_name, "description": text, **_plugin, **NODE_GROUP_FIELDS, **_owned},
}
NODE_GROUP_TEMPLATE_UPDATE = {**NODE_GROUP_TEMPLATE_CREATE, "required": []}

# A node group inside a cluster or cluster template: from a node group template, or spelled out.
NODE_GROUP = {
    "type": "object", "additionalProperties": False, "required": ["name", "count"],
    "properties": {"name": hostname_name, "count": count,
                   "node_group_template_id": object_id, **NODE_GROUP_FIELDS},
    "anyOf": [{"required": ["node_group_template_id"]}, {"required": ["flavor_id", "node_processes"]}],
}

_CLUSTER_TEMPLATE_FIELDS = {
    "name": hostname_name, "description": text, **_plugin,
    "cluster_configs": configs,
    "node_groups": {"type": "array", "items": NODE_GROUP, "maxItems": MAX_NODE_GROUPS},
    "anti_affinity": string_list,
    "default_image_id": optional_id,
    "neutron_management_network": text,
    "use_autoconfig": flag,
    "shares": shares,
    "domain_name": text,
    **_owned,
}
CLUSTER_TEMPLATE_CREATE = {"type": "object", "additionalProperties": False,
                           "required": ["name", "plugin_name", "plugin_version"],
                           "properties": _CLUSTER_TEMPLATE_FIELDS}
CLUSTER_TEMPLATE_UPDATE = {**CLUSTER_TEMPLATE_CREATE, "required": []}

# oasis: the cluster's lifecycle limits (oasis/db/lifecycle.py checks the values: seconds or '2h', a future time)
_duration = {"type": ["integer", "number", "string", "null"]}
LIFECYCLE = {"type": ["object", "null"], "additionalProperties": False,
             "properties": {"idle_delete_after": _duration, "max_age": _duration,
                            "delete_at": {"type": ["string", "null"], "maxLength": 64}}}

CLUSTER_CREATE = {
    "type": "object", "additionalProperties": False, "required": ["name", "plugin_name", "plugin_version"],
    "properties": {**_CLUSTER_TEMPLATE_FIELDS,
                   "cluster_template_id": object_id,
                   "user_keypair_id": text,
                   "is_transient": flag,
                   "count": {"type": "integer", "minimum": 1, "maximum": MAX_INSTANCES},
                   # oasis: the site (availability zone) of the whole cluster
                   "availability_zone": text,
                   "lifecycle": LIFECYCLE,
                   "autoscaling": AUTOSCALING},  # oasis: oasis/api/autoscaling.py
}
CLUSTER_CREATE_V1 = {**CLUSTER_CREATE, "properties": {k: v for k, v in CLUSTER_CREATE["properties"].items()
                                                      if k != "count"}}
CLUSTER_CREATE_MULTIPLE = {**CLUSTER_CREATE, "required": [*CLUSTER_CREATE["required"], "count"]}
CLUSTER_UPDATE = {
    "type": "object", "additionalProperties": False,
    "properties": {"name": hostname_name, "description": text, "shares": shares, "update_keypair": flag,
                   "verification": {"type": "object", "required": ["status"], "additionalProperties": False,
                                    "properties": {"status": {"enum": ["START"]}}},
                   "lifecycle": LIFECYCLE,
                   "autoscaling": {"oneOf": [AUTOSCALING, {"type": "null"}]},  # null: autoscaling off
                   **_owned},
}
CLUSTER_SCALE = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "resize_node_groups": {"type": "array", "minItems": 1, "maxItems": MAX_NODE_GROUPS, "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "count"],
            "properties": {"name": hostname_name, "count": count,
                           "instances": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_INSTANCES}}}},
        "add_node_groups": {"type": "array", "minItems": 1, "maxItems": MAX_NODE_GROUPS, "items": NODE_GROUP},
    },
    "anyOf": [{"required": ["resize_node_groups"]}, {"required": ["add_node_groups"]}],
}
CLUSTER_DELETE = {"type": "object", "additionalProperties": False, "properties": {"force": flag}}
CLUSTER_DELETE_V1 = {"type": "object", "additionalProperties": False, "properties": {}}

JOB_BINARY_CREATE = {
    "type": "object", "additionalProperties": False, "required": ["name", "url"],
    "properties": {"name": edp_name, "url": {"type": "string", "minLength": 1}, "description": text,
                   "extra": {"type": "object"}, **_owned},
}
JOB_BINARY_UPDATE = {**JOB_BINARY_CREATE, "required": []}
JOB_BINARY_INTERNAL_UPDATE = {"type": "object", "additionalProperties": False,
                              "properties": {"name": edp_name, **_owned}}

DATA_SOURCE_TYPES = ["file", "swift", "s3", "hdfs"]
DATA_SOURCE_CREATE = {
    "type": "object", "additionalProperties": False, "required": ["name", "type", "url"],
    "properties": {"name": edp_name, "type": {"enum": DATA_SOURCE_TYPES}, "url": {"type": "string", "minLength": 1},
                   "description": text, "credentials": {"type": "object"}, **_owned},
}
DATA_SOURCE_UPDATE = {**DATA_SOURCE_CREATE, "required": []}

INTERFACE_ITEM = {
    "type": "object", "additionalProperties": False, "required": ["name", "mapping_type", "location"],
    "properties": {"name": {"type": "string", "minLength": 1}, "description": text,
                   "mapping_type": {"enum": ["args", "configs", "params"]},
                   "location": {"type": "string", "minLength": 1},
                   "value_type": {"enum": ["string", "number", "data_source"]},
                   "required": flag, "default": {"type": ["string", "number", "boolean", "null"]}},
}


def job_template_create(job_types: list[str]) -> dict:
    return {
        "type": "object", "additionalProperties": False, "required": ["name", "type"],
        "properties": {"name": edp_name, "type": {"enum": job_types}, "description": text,
                       "mains": {"type": "array", "items": object_id, "uniqueItems": True},
                       "libs": {"type": "array", "items": object_id, "uniqueItems": True},
                       "interface": {"type": "array", "items": INTERFACE_ITEM}, **_owned},
    }


# Sahara v2 lets only these change on a job template.
JOB_TEMPLATE_UPDATE = {"type": "object", "additionalProperties": False,
                       "properties": {"name": edp_name, "description": text, **_owned}}

JOB_CREATE = {
    "type": "object", "additionalProperties": False, "required": ["job_template_id", "cluster_id"],
    "properties": {
        "job_template_id": object_id, "cluster_id": object_id, "input_id": optional_id, "output_id": optional_id,
        "job_configs": {"type": "object", "additionalProperties": False, "properties": {
            "configs": simple_config, "params": simple_config, "args": {"type": "array"},
            "job_execution_info": simple_config}},
        "interface": simple_config, **_owned},
}
JOB_EXECUTE_V1 = {**JOB_CREATE, "required": ["cluster_id"],
                  "properties": {k: v for k, v in JOB_CREATE["properties"].items() if k != "job_template_id"}}
JOB_UPDATE = {
    "type": "object", "additionalProperties": False, "minProperties": 1,
    "properties": {"info": {"type": "object", "additionalProperties": False, "required": ["status"],
                            # "resume" is an oasis extension: it continues a suspended job.
                            "properties": {"status": {"enum": ["cancel", "suspend", "resume"]}}}, **_owned},
}

_LABEL_CHANGE = {"type": "object", "additionalProperties": False, "required": ["status"],
                 "properties": {"status": {"type": "boolean"}}}
PLUGIN_UPDATE = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "plugin_labels": {"type": "object", "additionalProperties": _LABEL_CHANGE},
        "version_labels": {"type": "object",
                           "additionalProperties": {"type": "object", "additionalProperties": _LABEL_CHANGE}},
    },
}

# Nova's keypair names: letters, digits, spaces, '-' and '_' (Sahara's `valid_keypair_name`).
KEYPAIR_CREATE = {"type": "object", "additionalProperties": False, "required": ["name"],
                  "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 255,
                                          "pattern": r"^[A-Za-z0-9 _-]+\Z"},
                                 "public_key": {"type": "string", "maxLength": 16384}}}

IMAGE_REGISTER = {"type": "object", "additionalProperties": False, "required": ["username"],
                  "properties": {"username": {"type": "string", "minLength": 1, "maxLength": 64},
                                 "description": text}}
_TAG = {"type": "string", "minLength": 1, "maxLength": 64}
IMAGE_TAGS = {"type": "object", "additionalProperties": False, "required": ["tags"],
              "properties": {"tags": {"type": "array", "items": _TAG}}}
IMAGE_TAGS_SET = IMAGE_TAGS
