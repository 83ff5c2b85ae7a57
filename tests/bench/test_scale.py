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


def test_extrapolation_follows_the_two_largest_scales():
    from distill.bench.scale import STAGES, extrapolate

    records = [
        {"stage": st, "scale": s, "pairs": p, "documents": p // 10, "seconds": sec, "peak_rss_mib": rss}
        for st in STAGES
        for s, p, sec, rss in (
            (1, 1_000, 1.0, 100.0),
            (10, 10_000, 10.0, 200.0),
            (100, 100_000, 120.0, 300.0),
        )
    ]
    out = extrapolate(records, {"documents": 500_000, "pairs": 1_000_000})
    assert {r["stage"] for r in out} == set(STAGES)
    r = out[0]
    assert r["from_scales"] == [10, 100] and r["seconds"] == 1200.0  # time per pair of the largest scale
    assert r["peak_rss_mib"] == 300.0 + (100.0 / 90_000) * 900_000  # along the line through the last two
    assert r["rss_growth"] == 1.5 and r["pairs_growth"] == 10.0 and "rss_growth_less_index" not in r
    # the bound by documents: 5x as many documents per pair as measured, the same line by documents
    assert r["peak_rss_mib_by_documents"] == round(300.0 + (100.0 / 9_000) * 490_000)
    # a stage that builds the BM25 index: its growth also without the index's own bytes (1 MiB per 1,000
    # documents here: 1 and 10 MiB at the two scales)
    for rec in records:
        if rec["stage"] == "candidates":
            rec["index_bytes_per_doc"] = 2**20 / 1_000
    grown = {r["stage"]: r for r in extrapolate(records)}
    assert grown["candidates"]["rss_growth_less_index"] == round(290.0 / 199.0, 2)
    assert "rss_growth_less_index" not in grown["features"]


def test_a_small_scale_run_gives_one_record_per_stage(tmp_path):
    """The whole pipeline at a tiny scale through the bench: every stage measured in its own process."""
    import pytest

    from distill.bench import scale

    mp = pytest.MonkeyPatch()
    mp.setattr(scale, "BASE", {"n_docs": 400, "n_train": 30, "n_test": 15, "n_topics": 10})
    try:
        records = list(scale.scale_run(1, tmp_path, engine="tantivy"))
    finally:
        mp.undo()
    assert [r["stage"] for r in records] == list(scale.STAGES)
    assert all(r["seconds"] > 0 and r["peak_rss_mib"] > 50 and r["pairs"] > 0 for r in records)
    # the BM25 indexes' bytes per document, of the stages that build one: the candidates' search index and the
    # features' per-field indexes (bm25_title, bm25_text: pairs only, the corpus's fields apart)
    with_index = {r["stage"]: r["index_bytes_per_doc"] for r in records if "index_bytes_per_doc" in r}
    assert set(with_index) == {"candidates", "features"} and min(with_index.values()) > 0
