"""Arrow's memory pool: the C library's allocator once the package is imported, unless the user chose one."""

import os
import subprocess
import sys

import pytest

from distill.config import PROJECT_ROOT


@pytest.mark.parametrize("chosen,expected", [(None, "system"), ("", "system"), ("mimalloc", "mimalloc")])
def test_importing_the_package_sets_the_system_pool_unless_the_user_chose_one(chosen, expected):
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if chosen is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = chosen
    script = "import distill.data.beir, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == expected
