"""The one bench CLI: every record is printed and lands in bench.json with the machine it ran on."""

from __future__ import annotations

import json

from distill.bench.cli import main


def test_records_and_the_machine_land_in_bench_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    main(["--settings", "objectives", "--out", str(out)])
    saved = json.loads(out.read_text())
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert saved["records"] == printed and {r["setting"] for r in printed} == {"objective"}
    machine = saved["machine"]
    assert machine["cores"] >= 1 and set(machine["cpu_flags"]) <= {
        "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"
    }  # fmt: skip
