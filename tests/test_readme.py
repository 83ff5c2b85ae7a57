"""Every command the README (and the docs pages) shows runs as written: each `make TARGET ARGS="..."` line of a
code block is split as the shell splits it, `ARGS` is expanded into the recipe's command line as `make` does and
split again by the shell, and the overrides that reach Hydra must parse and compose (a misspelt key, an unquoted
comma, an unknown group option fail here); every `python -m MODULE` exists; every target is the Makefile's."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from distill.config import CONFIG_DIR, PROJECT_ROOT

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
# programs a page may show besides make and python; their own syntax is theirs
OTHER = {"curl", "echo", "torchrun", "wandb", "dask", "pip", "cd", "git", "export", "accelerate"}


def blocks(page: Path) -> list[str]:
    return re.findall(r"```(?:bash|sh)\n(.*?)```", page.read_text(), flags=re.S)


def commands(page: Path) -> list[tuple[str, dict[str, str]]]:
    """(command line, shell variables set before it) of each bash block, comments and continuations joined."""
    out = []
    for block in blocks(page):
        env: dict[str, str] = {}
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip() if not line.lstrip().startswith("#") else ""
            if not line:
                continue
            m = re.fullmatch(r"([A-Z_]+)=(.*)", line)
            if m:
                env[m.group(1)] = shlex.split(m.group(2))[0] if m.group(2) else ""
                continue
            out.append((line, dict(env)))
    # commands shown inline, e.g. in a table cell: `make teacher-score ARGS="..."`
    # (a pattern with placeholders, e.g. `student=NAME` or `a|b` or `...`, shows syntax, not a command)
    for span in re.findall(r"`((?:make [a-z]|python -m )[^`]*)`", page.read_text()):
        if not re.search(r"NAME|\.\.\.|\||ID_OR|FORMAT|MODULE", span):
            out.append((span, {}))
    return out


def expand(line: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Z_]+)\}?", lambda m: env.get(m.group(1), m.group(0)), line)


def make_targets() -> set[str]:
    text = (PROJECT_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", text, flags=re.M))


ALL = [(p.name, c, e) for p in PAGES for c, e in commands(p)]


def test_the_pages_show_commands():
    assert sum(1 for page, *_ in ALL if page == "README.md") >= 15


@pytest.mark.parametrize("page,line,env", ALL, ids=[f"{p}:{c[:60]}" for p, c, _ in ALL])
def test_a_shown_command_runs_as_written(page, line, env):
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    import distill.schema  # noqa: F401

    words = shlex.split(expand(line, env))
    program = words[0]
    if program == "make":
        target = words[1]
        assert target in make_targets(), f"{page}: make {target}: no such target"
        args = next((w.split("=", 1)[1] for w in words[2:] if w.startswith("ARGS=")), "")
        if target in ("bench", "test", "test-full", "lint", "setup", "clean", "help"):
            return
        overrides = shlex.split(args)  # the recipe's shell splits $(ARGS) again
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("-")])
        multirun = "-m" in overrides
        first = [
            f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
            if o.is_sweep_override() and multirun
            else o.input_line
            for o in parsed
        ]
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            compose("config", overrides=[f for f in first if f is not None] + ["logger=none"])
    elif program in ("python", "python3"):
        import importlib.util

        if words[1] == "-m":
            assert importlib.util.find_spec(words[2]) is not None, (
                f"{page}: python -m {words[2]}: no such module"
            )
        else:
            assert (PROJECT_ROOT / words[1]).is_file(), f"{page}: {words[1]}: no such script"
    else:
        assert program in OTHER, f"{page}: {program}: a command the test does not know how to check"


def test_the_readme_is_a_users_document_under_200_lines():
    assert len((PROJECT_ROOT / "README.md").read_text().splitlines()) < 200
