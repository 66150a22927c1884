"""What a config key means for a run, written once as schema field metadata (hsv_exp/config.py
declares its fields with these markers; every use derives from them): the fingerprint
(hsv_exp/run_dir.py), the run dir name (conf/hydra/default.yaml, checked by a test) and the
results' conditions (hsv_exp/results/runs.py).
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import field
from typing import Any

# Field metadata, the one home of "what a key means for a run":
# NOT_SEMANTIC: the key does not change what a run computes (logging, scheduling, where files go):
#   it is left out of the run's fingerprint, its run dir name and its results condition.
# EXECUTION: how a run executes (threads, caches, inference batch sizes); the results are the same
#   up to float rounding, so runs that differ only here pool into one results condition. These stay in
#   the fingerprint, so a run's fingerprint never changes when one is added here.
# PATH: the key names local files (a dict of them, or a model that may be a local dir): the
#   fingerprint sees each local path as an absolute one (absolute_paths), so GLUE_DIR=../shared/glue
#   and GLUE_DIR=/work/shared/glue name the same runs.
NOT_SEMANTIC = {"semantic": False}
EXECUTION = {"execution": True}
PATH = {"path": True}


def added_key(default, replaces: tuple[str, Any] | None = None, **metadata):
    """A field added after runs were made, whose default computes what those runs computed: at the
    default it is left out of the fingerprint (and `replaces` = (old key, old value) is put back in
    its group), so existing runs keep theirs; any other value enters it. See fingerprint_view."""
    return field(default=default, metadata={**metadata, "added": True, "default": default, "replaces": replaces})


def added_group(schema: type):
    """added_key for a whole config group: at its schema defaults it is left out of the fingerprint."""
    return field(default_factory=schema, metadata={"added": True, "default": dataclasses.asdict(schema()), "replaces": None})


def keys_marked(marker: dict, schema: type, prefix: str = "") -> tuple[str, ...]:
    """Dotted keys of the schema's fields whose metadata holds `marker` (NOT_SEMANTIC, EXECUTION)."""
    types = typing.get_type_hints(schema)
    keys: list[str] = []
    for item in dataclasses.fields(schema):
        key = prefix + item.name
        if all(item.metadata.get(name) == value for name, value in marker.items()):
            keys.append(key)
        elif dataclasses.is_dataclass(types[item.name]):
            keys.extend(keys_marked(marker, types[item.name], key + "."))
    return tuple(keys)


def map_fields(config: dict, schema: type, apply) -> dict:
    """A copy of a nested config dict, walked along its schema: `apply(field, config)` is called for
    every schema field the config holds, with the copy of that field's group; it edits that group in
    place and returns True when it handled the field, else a nested group is walked the same way."""
    types = typing.get_type_hints(schema)
    config = dict(config)
    for item in dataclasses.fields(schema):
        if item.name in config and not apply(item, config):
            if dataclasses.is_dataclass(types[item.name]) and isinstance(config[item.name], dict):
                config[item.name] = map_fields(config[item.name], types[item.name], apply)
    return config


def _as_before_added_keys(item: dataclasses.Field, group: dict) -> bool:
    if not (item.metadata.get("added") and group[item.name] == item.metadata["default"]):
        return False
    del group[item.name]
    if item.metadata["replaces"] is not None:
        old_key, old_value = item.metadata["replaces"]
        group[old_key] = old_value
    return True


def fingerprint_view(config: dict, schema: type) -> dict:
    """A copy of a nested config dict as fingerprints see it: every added_key at its default is
    replaced by what the config held before the key existed (nothing, or the key it replaces)."""
    return map_fields(config, schema, _as_before_added_keys)


def absolute_path(value):
    """A local path made absolute; anything else unchanged: None, a hub id ("roberta-base",
    "FacebookAI/roberta-base" where no such local dir exists), a "package:" or "pypi-parts:" id."""
    if not isinstance(value, str) or not value or re.match(r"^[a-z][a-z-]*:", value):
        return value
    written_as_path = value.startswith(("/", "./", "../", "~")) or value in (".", "..")
    if not (written_as_path or os.path.exists(value)):
        return value
    return os.path.abspath(os.path.expanduser(value))


def _absolute(item: dataclasses.Field, group: dict) -> bool:
    if not item.metadata.get("path"):
        return False
    value = group[item.name]
    group[item.name] = {k: absolute_path(v) for k, v in value.items()} if isinstance(value, dict) else absolute_path(value)
    return True


def absolute_paths(config: dict, schema: type) -> dict:
    """A copy of a nested config dict with every PATH key's local paths made absolute (absolute_path;
    a dict-valued key has each of its values made absolute)."""
    return map_fields(config, schema, _absolute)


def drop_keys(config: dict, keys: tuple[str, ...]) -> dict:
    """A copy of a nested config dict without the dotted `keys` (absent ones are ignored)."""
    config = dict(config)
    for key in keys:
        head, _, rest = key.partition(".")
        if head not in config:
            continue
        if rest:
            config[head] = drop_keys(config[head], (rest,)) if isinstance(config[head], dict) else config[head]
        else:
            del config[head]
    return config
