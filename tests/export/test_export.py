"""`make export`: every student family as ONNX and OpenVINO graphs (int8 too), scored against the original;
GBDT graphs equal to the library within 1e-5 with the native files and features.json; stale and bad exports
refused with one line; exports served and evaluated as rankers of their own."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from distill.config import PROJECT_ROOT
from distill.data.prepare import load_dataset
from distill.errors import ConfigError, StageNotReadyError
from distill.export.stage import export_scorers, find_ranker, find_student, load_export
from distill.export.stage import run as run_export
from distill.graphs import runtime as graph
from distill.ir.metrics import kendall_per_query
from distill.retrieval.candidates import run as run_candidates
from distill.students.base import Context, load_scorers
from distill.students.stage import run as run_student
from distill.teacher.scoring import run as run_score
from distill.teacher.train import run as run_train
from distill.workspace import Workspace
from tests.conftest import TINY_SAMPLE, compose_under
from tests.helpers import TINY_TEACHER

NEURAL = {  # student name -> its training overrides (tiny, seconds each)
    "bi_encoder_kl": ["student=bi_encoder", "student.base_model=teacher", "student.lr=1e-3"],
    "cross_encoder_margin_mse": ["student=cross_encoder", "student.dtype=fp32"],  # from the teacher
    "multi_vector_kl": ["student=multi_vector", "student.document_length=48", "student.dim=16"],
    "sparse_kl": ["student=sparse"],
}
TINY_NEURAL = [
    "student.negatives=3",
    "student.negative_margin=null",
    "student.samples_per_positive=2",
    "student.max_length=48",
    "student.batch_size=16",
    "student.epochs=1",
]
GBDT = {
    "lightgbm": ["student=lightgbm", "student.num_trees=20", "student.min_data_in_leaf=5"],
    "xgboost": ["student=xgboost", "student.num_trees=20", "student.objective=lambdarank"],
}


@pytest.fixture(scope="module")
def ws_cfg(tmp_path_factory):
    """One tiny sample workspace with a trained teacher, its soft labels, features and one student of each
    family; returns a config factory."""
    from distill.features.build import run as run_features

    root = tmp_path_factory.mktemp("export")

    def cfg(*o):
        return compose_under(root, f"data.path={root / 'sample'}", *TINY_SAMPLE, *TINY_TEACHER, *o)

    run_candidates(cfg())
    run_train(cfg())
    run_score(cfg())
    run_features(cfg())
    for overrides in NEURAL.values():
        run_student(cfg(*overrides, *TINY_NEURAL))
    for overrides in GBDT.values():
        run_student(cfg(*overrides))
    return cfg


def context(cfg) -> Context:
    ws = Workspace.from_cfg(cfg)
    cands = pd.read_parquet(ws.candidates)
    return Context.of(cfg, load_dataset(cfg), ws, cands[cands.split == "test"].reset_index(drop=True))


def scores_of(cfg, student: str, kind: str) -> tuple[np.ndarray, np.ndarray, Context]:
    """The student's own scores and its export's on the test candidates."""
    ctx = context(cfg)
    model_dir = find_student(ctx.ws, student)
    original = load_scorers(model_dir, ctx)[0]
    exported = load_export(Workspace.from_cfg(cfg).exports / f"{student}-{kind}", ctx)[0]
    assert exported.name == f"{original.name}@{kind}"
    return original.score(ctx.cands), exported.score(ctx.cands), ctx


@pytest.mark.parametrize("student", list(NEURAL))
def test_each_neural_family_exports_to_onnx_scoring_as_the_model(ws_cfg, student):
    cfg = ws_cfg(f"export.student={student}")
    meta = run_export(cfg)
    a, b, ctx = scores_of(cfg, student, "onnx")
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(a).max())))
    assert meta["graph_check"]["max_rel_diff_fp32"] < 1e-4
    fid = meta["fidelity"][f"{student}@onnx"]
    assert fid["kendall_tau"] > 0.999 and abs(fid["ndcg@10_diff"]) < 1e-6
    assert fid["ms_per_query"] > 0 and fid["ms_per_query_original"] > 0
    folder = Workspace.from_cfg(cfg).exports / f"{student}-onnx"
    assert (folder / "model.onnx").is_file() and (folder / "tokenizer.json").is_file()
    assert not list(
        folder.rglob("*.safetensors")
    )  # the graph holds the weights; the folder is not copied whole


@pytest.mark.parametrize(
    "student,fmt,quantize",
    [
        ("bi_encoder_kl", "onnx", "int8"),
        ("bi_encoder_kl", "openvino", "none"),
        ("bi_encoder_kl", "openvino", "int8"),
        ("cross_encoder_margin_mse", "onnx", "int8"),
        ("cross_encoder_margin_mse", "openvino", "int8"),
    ],
)
def test_openvino_and_int8_exports_keep_the_ranking(ws_cfg, student, fmt, quantize):
    kind = fmt + ("-int8" if quantize == "int8" else "")
    cfg = ws_cfg(
        f"export.student={student}",
        f"export.format={fmt}",
        f"export.quantize={quantize}",
        "export.precision=f32",
    )
    meta = run_export(cfg)
    a, b, ctx = scores_of(cfg, student, kind)
    tau = kendall_per_query(ctx.cands, b, a)
    assert tau == pytest.approx(meta["fidelity"][f"{student}@{kind}"]["kendall_tau"])
    folder = Workspace.from_cfg(cfg).exports / f"{student}-{kind}"
    if quantize == "none":  # the same graph in f32: the model's scores
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-3 * float(np.abs(a).max()))
        return
    # int8: quantised operators in the graph, the ranking still the model's in the main (these tiny models'
    # scores spread over a few thousandths; real weights keep it within 0.95: test_graph.py)
    text = (
        (folder / "model.xml").read_text()
        if fmt == "openvino"
        else (folder / "model.onnx").read_bytes().decode("latin-1")
    )
    assert meta["calibration"]["queries"] > 0
    search = meta["calibration"].get("search")
    if search and search["fp32_products"] == search["products"]:
        # the ONNX search found no int8 product that keeps the order of these close scores (mean Kendall within
        # calls >= 0.98): every product stays fp32, and the export says so rather than ranking worse
        assert ("FakeQuantize" if fmt == "openvino" else "QuantizeLinear") not in text
        assert not graph.agrees(search["tried"][0]["agreement"])
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-3 * float(np.abs(a).max()))
        return
    assert ("FakeQuantize" in text) if fmt == "openvino" else ("QuantizeLinear" in text)
    assert tau > 0.5
    assert not np.allclose(a, b, rtol=1e-6, atol=0)  # really quantised


@pytest.mark.parametrize("student", list(GBDT))
def test_gbdt_exports_score_as_the_library_with_its_files_and_features(ws_cfg, student):
    cfg = ws_cfg(f"export.student={student}")
    meta = run_export(cfg)
    a, b, _ = scores_of(cfg, student, "onnx")
    assert np.abs(a - b).max() <= 1e-5
    folder = Workspace.from_cfg(cfg).exports / f"{student}-onnx"
    trained = json.loads((Workspace.from_cfg(cfg).model(student) / "features.json").read_text())
    spec = json.loads((folder / "features.json").read_text())
    assert [f["name"] for f in spec["features"]] == trained
    assert [f["index"] for f in spec["features"]] == list(range(len(trained)))
    assert all(f["computed_by"].startswith("distill.features.") and f["about"] for f in spec["features"])
    assert spec["options"]["retrieval"]["k1"] == cfg.retrieval.k1
    X = np.random.default_rng(0).normal(size=(50, len(trained))).astype(np.float32)
    if student == "lightgbm":
        import lightgbm as lgb

        ref = lgb.Booster(model_file=str(Workspace.from_cfg(cfg).model(student) / "model.txt"))
        back = lgb.Booster(model_file=str(folder / "model.txt"))
        np.testing.assert_array_equal(back.predict(X), ref.predict(X))
        assert len(json.loads((folder / "lightgbm.json").read_text())["tree_info"]) == ref.num_trees()
    else:
        import xgboost as xgb

        back = xgb.Booster()
        back.load_model(str(folder / "model.json"))
        trees = json.loads((folder / "xgboost_dump.json").read_text())
        assert len(trees) == back.num_boosted_rounds() and any("split" in t for t in trees)
    assert meta["native"] and meta["fidelity"][f"{student}@onnx"]["max_abs_diff"] <= 1e-5


def test_a_lightgbm_student_compiled_by_lleaves_scores_as_the_booster(ws_cfg):
    import lightgbm as lgb

    from distill.export.gbdt import INPUT, LleavesRunner

    meta = run_export(ws_cfg("export.student=lightgbm", "export.format=lleaves"))
    assert meta["runtime"]["library"] == "lleaves" and meta["graph"] == "model.lleaves.txt"
    a, b, ctx = scores_of(ws_cfg(), "lightgbm", "lleaves")
    assert np.abs(a - b).max() <= 1e-5 and meta["fidelity"]["lightgbm@lleaves"]["max_abs_diff"] <= 1e-5
    folder = ctx.ws.exports / "lightgbm-lleaves"
    (lib,) = folder.glob("lleaves.*.so")  # compiled at export, for this CPU, and reused on load
    # the compiled library itself (not the booster behind it) gives the raw scores, NaN (missing) included
    booster = lgb.Booster(model_file=str(ctx.ws.model("lightgbm") / "model.txt"))
    X = np.random.default_rng(0).normal(size=(100, booster.num_feature()))
    X[::7, 0] = np.nan
    got = LleavesRunner(folder / "model.lleaves.txt")({INPUT: X})["score"]
    np.testing.assert_allclose(got, booster.predict(X, raw_score=True), atol=1e-9)
    assert list(folder.glob("lleaves.*.so")) == [lib]
    assert find_ranker(ctx, "lightgbm@lleaves", "serve.student").name == "lightgbm@lleaves"


def test_exports_are_rankers_of_evaluation_and_the_server(ws_cfg):
    from distill.evaluation.rankers import find_rankers
    from distill.serving.service import pick_student

    cfg = ws_cfg("export.student=lightgbm")
    run_export(cfg)
    ctx = context(cfg)
    names = [r.name for r in find_rankers(cfg, ctx.ds, ctx.ws, ctx.cands)]
    assert "lightgbm" in names and "lightgbm@onnx" in names
    assert pick_student(ctx.ws, ctx, "lightgbm", "onnx").name == "lightgbm@onnx"
    assert pick_student(ctx.ws, ctx, "lightgbm@onnx").name == "lightgbm@onnx"
    with pytest.raises(
        ConfigError, match=r"serve.student='xgboost@onnx-int8': no such export .* make export"
    ):
        pick_student(ctx.ws, ctx, "xgboost", "onnx-int8")


def test_bad_exports_get_one_line(ws_cfg, tmp_path):
    with pytest.raises(
        ConfigError, match=r"export.student='nope': no trained student of that name; trained: \["
    ):
        run_export(ws_cfg("export.student=nope"))
    with pytest.raises(ConfigError, match=r"export.student='': not set; trained: \["):
        run_export(ws_cfg())
    with pytest.raises(
        ConfigError, match="a GBDT student .* exports as export.format=onnx export.quantize=none"
    ):
        run_export(ws_cfg("export.student=xgboost", "export.format=openvino"))
    with pytest.raises(
        ConfigError, match=r"export.format='tflite': use one of \['onnx', 'openvino', 'lleaves'\]"
    ):
        run_export(ws_cfg("export.format=tflite"))
    with pytest.raises(
        ConfigError, match="a GBDT student .* exports as export.format=onnx export.quantize=none"
    ):
        run_export(ws_cfg("export.student=xgboost", "export.format=lleaves"))
    with pytest.raises(
        ConfigError, match="export.format=lleaves: .* is a neural student; lleaves compiles LightGBM"
    ):
        run_export(ws_cfg("export.student=sparse_kl", "export.format=lleaves"))
    with pytest.raises(
        ConfigError, match="export.format=lleaves compiles the trees as they are: use export.quantize=none"
    ):
        run_export(ws_cfg("export.student=lightgbm", "export.format=lleaves", "export.quantize=int8"))
    with pytest.raises(StageNotReadyError, match="has no trained student: run `make train-student"):
        run_export(
            compose_under(tmp_path, f"paths.workspace={tmp_path / 'empty'}", "export.student=lightgbm")
        )
    # the command line: one line, exit status 2
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/export.py",
            f"paths.workspace={Workspace.from_cfg(ws_cfg()).root}",
            "export.student=nope",
            "logger=none",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "no trained student of that name" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_stale_export_is_never_served(ws_cfg, caplog):
    """Retraining the student after its export: the server refuses the export, evaluation leaves it out, each
    with one line naming the command that exports it again."""
    from distill.serving.service import pick_student

    cfg = ws_cfg("export.student=xgboost")
    run_export(cfg)
    run_student(ws_cfg(*GBDT["xgboost"][:1], "student.num_trees=7"))  # retrained: another model
    ctx = context(cfg)
    folder = ctx.ws.exports / "xgboost-onnx"
    stale = r"xgboost-onnx is stale: xgboost changed \(retrained\) since it was exported; re-export it: make export"
    with pytest.raises(StageNotReadyError, match=stale):
        load_export(folder, ctx)
    with pytest.raises(StageNotReadyError, match=stale):
        pick_student(ctx.ws, ctx, "xgboost", "onnx")
    with pytest.raises(StageNotReadyError, match=stale):
        find_ranker(ctx, "xgboost@onnx", "serve.student")
    assert "xgboost@onnx" not in [s.name for s in export_scorers(ctx)]
    assert "left out" in caplog.text and "is stale" in caplog.text
    run_export(cfg)  # exported again: served
    assert pick_student(ctx.ws, ctx, "xgboost", "onnx").name == "xgboost@onnx"


def test_every_feature_says_how_it_is_computed():
    from omegaconf import OmegaConf

    from distill.config import CONFIG_DIR
    from distill.features.family import load_families

    families = {}
    for path in sorted((CONFIG_DIR / "feature").glob("*.yaml")):
        families |= OmegaConf.to_container(OmegaConf.load(path))
    for fam in load_families(families):
        assert set(fam.about) == set(fam.names), type(fam).__name__
        assert all(len(text) > 10 for text in fam.about.values())
