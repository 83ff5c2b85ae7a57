import pytest

from distill.bench.scale import run_measured, scaled_options


def test_peak_rss_is_the_stages_own(tmp_path):
    ballast = bytearray(300 * 2**20)  # the parent is big: a child's rusage would inherit this
    small, big = tmp_path / "small.py", tmp_path / "big.py"
    small.write_text("x = 1\n")
    big.write_text("x = bytearray(400 * 2**20)\nx[::4096] = b'1' * len(x[::4096])\n")
    a = run_measured([str(small)], tmp_path / "small.log")
    b = run_measured([str(big)], tmp_path / "big.log")
    assert a["peak_rss_mib"] < 100 < 400 <= b["peak_rss_mib"] < 500
    assert a["seconds"] > 0 and len(ballast) > 0


def test_a_failing_stage_raises_with_its_last_lines(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("print('working')\nraise SystemExit('error: no candidates here')\n")
    with pytest.raises(RuntimeError, match=r"failed \(1\):.*error: no candidates here"):
        run_measured([str(bad)], tmp_path / "bad.log")


def test_modules_run_too_and_scales_multiply_the_sample_world(tmp_path):
    assert run_measured(["-m", "json.tool", "--help"], tmp_path / "m.log")["peak_rss_mib"] > 0
    assert "data.options.n_docs=60000" in scaled_options(10)
