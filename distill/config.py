"""The config core: value checks, plain-value conversion and whole-config validation.

Each room owns its typed schema beside its code (`distill/<room>/schema.py`: data, retrieval, teacher, features,
students, evaluation, serving; `distill/dashboard.py`); `distill/schema.py` puts them together into the root
`Config` and registers them all in Hydra's ConfigStore, from that one place. Every group option under `configs/`
is merged into its schema, so a misspelt key or a value of the wrong type fails when the config is composed;
`validate` then runs every typed node's value checks (`__post_init__`) before anything runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"

if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
if not OmegaConf.has_resolver("basename"):  # a folder's name: data.name of data=beir is its folder's name
    OmegaConf.register_new_resolver("basename", lambda path: Path(str(path).rstrip("/")).name)


def check(ok: bool, key: str, value: Any, rule: str) -> None:
    """Raise a `ConfigError` naming `key` and its allowed range unless `ok`."""
    if not ok:
        from distill.errors import ConfigError

        raise ConfigError(f"{key}={value!r}: {rule}")


def check_positive(node: Any, prefix: str, *keys: str) -> None:
    """Each of `keys` of `node` is > 0 (or null where the schema allows null)."""
    for k in keys:
        v = getattr(node, k)
        check(v is None or v > 0, f"{prefix}.{k}", v, "must be > 0")


def check_at_least(node: Any, prefix: str, low: float, *keys: str) -> None:
    for k in keys:
        v = getattr(node, k)
        check(v is None or v >= low, f"{prefix}.{k}", v, f"must be >= {low}")


def check_fraction(node: Any, prefix: str, *keys: str, closed: bool = True) -> None:
    """Each of `keys` is in [0, 1] (`closed`) or [0, 1)."""
    for k in keys:
        v = getattr(node, k)
        ok = v is None or (0 <= v <= 1 if closed else 0 <= v < 1)
        check(ok, f"{prefix}.{k}", v, "must be in [0, 1]" if closed else "must be in [0, 1)")


def check_choice(node: Any, prefix: str, key: str, choices: tuple[Any, ...]) -> None:
    v = getattr(node, key)
    check(v in choices, f"{prefix}.{key}", v, f"use one of {', '.join(map(str, choices))}")


NAME_RULE = "a plain name: letters, digits, '.', '_' or '-', no path separators, not '.' or '..'"


def is_plain_name(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", name or "")) and name not in (".", "..")


@dataclass
class PathsConfig:
    output_root: str = "${project_root:}/outputs"
    # Every stage reads and writes here (candidates.parquet, soft_labels/, models/, metrics.json, ...).
    workspace: str = "${paths.output_root}/${data.name}"
    # Generated and converted datasets live here (never committed).
    data_root: str = "${project_root:}/data"
    # The shared real collections (../shared/data beside the checkout); DISTILL_SHARED_DATA overrides.
    shared_data: str = "${oc.env:DISTILL_SHARED_DATA,${project_root:}/../shared/data}"

    def __post_init__(self) -> None:
        for key in ("output_root", "workspace", "data_root"):
            v = getattr(self, key)
            check(
                bool(str(v).strip()),
                f"paths.{key}",
                v,
                "give a folder (an empty value would mean the current one)",
            )


@dataclass
class DaskConfig:
    """A stage's work on a Dask cluster instead of in this process (`retrieval.dask`, `features.dask`,
    `student.dask`; distill/distributed.py)."""

    # null: no Dask; local: a LocalCluster of `workers` processes here; else a scheduler address (tcp://host:8786)
    cluster: str | None = None
    workers: int = 2
    threads_per_worker: int = 1

    def __post_init__(self) -> None:
        check_positive(self, "dask", "workers", "threads_per_worker")


def validate(cfg: DictConfig) -> None:
    """Every typed node of the config, whatever its group: unknown keys refused (`check_known_keys`), then its
    value checks (`__post_init__`). Composing checks keys and types, not ranges; this runs before anything."""
    from omegaconf.errors import MissingMandatoryValue

    from distill.errors import ConfigError

    if not isinstance(cfg, DictConfig):
        return
    try:
        for key in cfg:
            if key == "hydra":  # Hydra's own node, checked by Hydra
                continue
            node = cfg._get_node(key)
            if (
                isinstance(node, DictConfig)
                and not node._is_none()
                and is_dataclass(OmegaConf.get_type(node))
            ):
                check_known_keys(node, str(key))
                OmegaConf.to_object(node)
    except MissingMandatoryValue as e:
        raise ConfigError(f"{e.full_key} has no value: set it on the command line ({e.full_key}=...)") from e


def refuse_unknown_keys(cls: type, keys: Any, where: str) -> list[str]:
    """The field names of dataclass `cls`; a key among `keys` that is not one is a `ConfigError` naming it."""
    from distill.errors import ConfigError

    known = sorted(f.name for f in fields(cls))
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {known}")
    return known


def omegaconf_error_line(error: BaseException | None) -> str | None:
    """One line for OmegaConf's error on a key: the key and the options its schema knows (an unknown key), or the
    key and OmegaConf's first line (a value of the wrong type); None for any other error."""
    key = getattr(error, "full_key", None)
    kind = getattr(error, "object_type", None)
    if key and type(error).__name__ in ("ConfigAttributeError", "ConfigKeyError"):
        known = sorted(f.name for f in fields(kind)) if kind and is_dataclass(kind) else []
        where = f" of {kind.__name__}" if kind else ""
        return f"{key}: no such option{where}; known: {known}" if known else f"{key}: no such option"
    if key and type(error).__name__ == "ValidationError":
        return f"{key}: {str(error).splitlines()[0]}"
    return None


def check_known_keys(node: DictConfig, where: str) -> None:
    """A key that a typed node's dataclass does not declare is a `ConfigError` naming it. Hydra lets
    `+group.key=value` append one, and `OmegaConf.to_object` would keep it as a stray attribute."""
    kind = OmegaConf.get_type(node)
    if kind is None or not is_dataclass(kind):
        return
    known = refuse_unknown_keys(kind, (str(k) for k in node), where)
    for k in known:
        child = node._get_node(k)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            check_known_keys(child, f"{where}.{k}")


def from_plain(cls: type, values: dict[str, Any] | None, where: str) -> Any:
    """Dataclass `cls` from plain values that did not come through Hydra (a saved model's config, a command
    line's KEY=VALUE pairs, a test): merged onto its typed schema, so keys and types are checked as composing
    checks them (strings convert: "true" -> True, "3" -> 3), then `__post_init__` checks the values. A bad key or
    type is a `ConfigError` naming it."""
    from omegaconf.errors import ConfigKeyError, ValidationError

    from distill.errors import ConfigError

    values = dict(values or {})
    refuse_unknown_keys(cls, values, where)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), values))
    except (ValidationError, ConfigKeyError) as e:
        raise ConfigError(f"{where}: {' '.join(str(e).split())}") from e


def typed(node: Any, cls: type, where: str) -> Any:
    """`node` (a composed group, typed or plain) as an instance of `cls`, checked."""
    if isinstance(node, cls):
        return node
    if isinstance(node, DictConfig) and OmegaConf.get_type(node) is cls:
        return OmegaConf.to_object(node)
    return from_plain(cls, to_container(node), where)


def load_callable(path: str, what: str) -> Any:
    """`module:function` or `module.function` (or a class) -> the object, through Hydra's own resolver
    (`hydra.utils.get_object`); a `ConfigError` naming `what` if it cannot be imported."""
    from hydra.utils import get_object

    from distill.errors import ConfigError

    try:
        return get_object(path.replace(":", "."))
    except Exception as e:  # ImportError, or Hydra's wrapper of it
        raise ConfigError(f"{what}: cannot import {path!r} ({' '.join(str(e).split())[:200]})") from e


def to_container(cfg: DictConfig | Any) -> Any:
    """The resolved config as plain Python objects."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg
