"""Every YAML under configs/ against the schema it names (distill/schema.py registers them all): each key it
states exists in the schema and differs from the schema's default, except the few keys a YAML states on purpose
(a student's `_target_` and `name`, a dataset's `name` and `path`); so the YAML and the dataclass cannot drift
apart, and a YAML reads as exactly what its option changes."""

from __future__ import annotations

import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

import distill.schema  # noqa: F401
from distill.config import CONFIG_DIR

ON_PURPOSE = {"student": {"_target_", "name"}, "data": {"name", "path"}}
TYPED_GROUPS = ["data", "retrieval", "teacher", "student", "features", "evaluate", "paths"]


def yamls():
    return [(g, p.stem) for g in TYPED_GROUPS for p in sorted((CONFIG_DIR / g).glob("*.yaml"))]


def stated(raw, schema, prefix=""):
    """Every key a YAML states, dotted, down to the schema's typed nodes (a free dict option, e.g. the hf
    format's `corpus`, is one value); values as written, interpolations unresolved."""
    from dataclasses import is_dataclass

    values = OmegaConf.to_container(raw, resolve=False) if not prefix else raw
    out = {}
    for k, v in values.items():
        if k == "defaults":
            continue
        child = schema._get_node(k) if schema is not None and k in schema else None
        typed = child is not None and OmegaConf.is_dict(child) and is_dataclass(OmegaConf.get_type(child))
        if isinstance(v, dict) and v and typed:
            out |= stated(v, child, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("group,name", yamls(), ids=[f"{g}/{n}" for g, n in yamls()])
def test_a_yaml_states_only_what_differs_from_its_schema(group, name):
    raw = OmegaConf.load(CONFIG_DIR / group / f"{name}.yaml")
    defaults = list(raw.get("defaults") or [])
    assert len(defaults) == 1 and str(defaults[0]).endswith("_schema"), f"{group}/{name}.yaml names no schema"
    schema = OmegaConf.create(ConfigStore.instance().load(f"{group}/{defaults[0]}.yaml").node)
    plain = OmegaConf.to_container(schema, resolve=False)
    for key, value in stated(raw, schema).items():
        default, known = plain, True
        for part in key.split("."):
            known = known and isinstance(default, dict) and part in default
            default = default.get(part) if isinstance(default, dict) else None
        assert known, f"{group}/{name}.yaml: {key} is not an option of {defaults[0]}"
        if key.split(".")[0] not in ON_PURPOSE.get(group, set()):
            assert value != default, f"{group}/{name}.yaml: {key}={value!r} repeats {defaults[0]}'s default"


def test_every_student_yaml_states_its_target_and_name():
    """The loader registry (students.base.registered_modules) reads each YAML's own `_target_`."""
    for path in sorted((CONFIG_DIR / "student").glob("*.yaml")):
        raw = OmegaConf.load(path)
        assert raw.get("_target_") and raw.get("name") == path.stem, path.name


def test_every_group_of_the_root_is_checked_at_start(make_cfg):
    """validate() walks every typed node of the config, whatever its group: demo and dashboard included."""
    from distill.config import validate
    from distill.errors import ConfigError

    for override, message in [
        ("dashboard.backend=tensorbord", "dashboard.backend"),
        ("demo.students=[../etc]", "demo.students"),
        ("loadtest.max_requests=0", "loadtest.max_requests"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate(make_cfg(override))


def test_code_outside_hydra_main_composes_through_compose_config():
    """`make bench ARGS="--settings job"` composed the config itself without the schemas registered and stopped on
    Hydra's "Could not load 'evaluate/evaluate_schema'". Every compose outside `@hydra.main` now goes through
    `distill.schema.compose_config`, which registers them, and no other module opens Hydra's config folder."""
    import ast

    from distill.config import PROJECT_ROOT

    opened = sorted(
        str(path.relative_to(PROJECT_ROOT))
        for path in (PROJECT_ROOT / "distill").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Name | ast.Attribute)
        and (node.id if isinstance(node, ast.Name) else node.attr) == "initialize_config_dir"
    )
    assert set(opened) == {"distill/schema.py"}


def test_compose_config_registers_the_schemas_in_a_fresh_process():
    import subprocess
    import sys

    code = (
        "from distill.schema import compose_config\n"
        "cfg = compose_config(['data=vaswani', 'logger=none'])\n"
        "print(cfg.evaluate.split, cfg.data.name)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["test", "vaswani"]
