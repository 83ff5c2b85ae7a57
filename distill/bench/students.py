"""GBDT student benchmarks (`make bench ARGS="--settings gbdt,objectives"`), one record each.

`gbdt`: training time of `listnet_kd` (custom objective) against LightGBM's built-in lambdarank on the same data
(synthetic: `rows` rows in groups of 100, 15 features, teacher scores a noisy function of them; 200 trees, 2
threads), and student scoring speed on 1,000 candidates.

`objectives`: one gradient/hessian evaluation of every distillation objective on 2,000 queries of 100 candidates,
then with one query of 1,000 added: seconds and peak memory (tracemalloc, which sees NumPy's allocations), run
bucket by bucket (`objectives.groups.GroupObjective`) and, where it fits, as one matrix padded to the widest
query (the former form); the padded cells that form would need are given either way."""

from __future__ import annotations

from typing import Any

import numpy as np

from distill.ir.timing import best_of


def gbdt_bench(
    rows: int = 200_000, group: int = 100, trees: int = 200, threads: int = 2, seed: int = 0
) -> list[dict]:
    import lightgbm as lgb

    from distill.objectives import Groups, ListNetKD
    from distill.objectives.adapters import lightgbm_objective, teacher_grades

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 15)).astype(np.float32)
    t = X[:, 0] * 2 + np.sin(X[:, 1] * 3) + X[:, 2] * X[:, 3] + rng.normal(0, 0.5, rows)
    sizes = np.full(rows // group, group)
    grades = teacher_grades(t, Groups.from_sizes(sizes), 5)
    base = {
        "learning_rate": 0.05,
        "num_leaves": 31,
        "num_threads": threads,
        "verbose": -1,
        "seed": seed,
        "deterministic": True,
        "label_gain": [2**i - 1 for i in range(5)],
    }
    out = []
    times = {}
    for name, objective in (("lambdarank", "lambdarank"), ("listnet_kd", lightgbm_objective(ListNetKD(), t))):
        ds = lgb.Dataset(X, grades, group=sizes)

        def fit(ds: Any = ds, objective: Any = objective) -> Any:
            return lgb.train({**base, "objective": objective}, ds, num_boost_round=trees)

        times[name], booster = best_of(fit, 1)
        if name == "listnet_kd":
            cand = X[:1000]
            booster.predict(cand)

            def predict(b: Any = booster, c: Any = cand) -> Any:
                return b.predict(c, num_threads=threads)

            per_call, _ = best_of(predict, 20)
            out.append(
                {
                    "setting": "gbdt_scoring",
                    "candidates": 1000,
                    "ms_per_1000": round(per_call * 1000, 3),
                    "engine_pairs_per_s": round(1000 / per_call, 1),
                }
            )
            out += served_scoring(booster, X[:100])
    out.insert(
        0,
        {
            "setting": "gbdt_training",
            "rows": rows,
            "groups": len(sizes),
            "trees": trees,
            "threads": threads,
            "lambdarank_s": round(times["lambdarank"], 4),
            "listnet_kd_s": round(times["listnet_kd"], 4),
            "ratio": round(times["listnet_kd"] / times["lambdarank"], 3),
        },
    )
    return out


def served_scoring(booster: Any, X: np.ndarray, repeats: int = 200) -> list[dict]:
    """One served request's scoring (`len(X)` candidates, one thread, as the GBDT student scores): LightGBM's
    `Booster.predict` against the ONNX export on ONNX Runtime and, where installed, lleaves and treelite
    (tl2cgen) compiled models: ms per request and the largest difference from `Booster.predict`."""
    import tempfile
    from pathlib import Path

    from distill.export import gbdt
    from distill.graphs.runtime import OnnxRunner

    ref = booster.predict(X, num_threads=1)
    runners: dict[str, Any] = {"lightgbm Booster.predict": lambda: booster.predict(X, num_threads=1)}
    tmp = Path(tempfile.mkdtemp())
    path, output = gbdt.to_onnx(booster, X.shape[1], tmp / "model.onnx")
    onnx = OnnxRunner(path, threads=1)
    runners["onnxruntime"] = lambda: onnx({gbdt.INPUT: X})[output].reshape(-1)
    text = tmp / "model.txt"
    text.write_text(gbdt.regression_text(booster))
    notes: dict[str, str] = {}
    try:
        import lleaves

        ll = lleaves.Model(model_file=str(text))
        ll.compile(cache=str(tmp / "lleaves.so"))
        runners["lleaves"] = lambda: ll.predict(X.astype(np.float64), n_jobs=1)
    except ImportError:
        notes["lleaves"] = "not installed"
    except Exception as e:  # e.g. an llvmlite newer than lleaves supports: a note, not a failed bench
        notes["lleaves"] = f"failed: {type(e).__name__}: {e}"
    try:
        import tl2cgen
        import treelite

        tl = treelite.frontend.load_lightgbm_model(str(text))
        tl2cgen.export_lib(tl, toolchain="gcc", libpath=str(tmp / "treelite.so"), params={"parallel_comp": 8})
        pred = tl2cgen.Predictor(str(tmp / "treelite.so"), nthread=1)
        runners["treelite (tl2cgen)"] = lambda: pred.predict(tl2cgen.DMatrix(X)).reshape(-1)
    except ImportError:
        notes["treelite (tl2cgen)"] = "not installed"
    except Exception as e:  # no C compiler, an incompatible version
        notes["treelite (tl2cgen)"] = f"failed: {type(e).__name__}: {e}"
    out = []
    base = None
    for name, fn in runners.items():
        fn()
        seconds, got = best_of(fn, repeats)
        base = base or seconds
        out.append(
            {
                "setting": "gbdt_served_scoring",
                "candidates": len(X),
                "scorer": name,
                "ms_per_request": round(seconds * 1000, 4),
                "vs_booster_predict": round(base / seconds, 3),
                "max_abs_diff": float(np.max(np.abs(np.asarray(got, np.float64) - ref))),
            }
        )
    out += [{"setting": "gbdt_served_scoring", "scorer": k, "note": v} for k, v in notes.items()]
    return out


def objectives_bench(n_queries: int = 2000, width: int = 100, long: int = 1000, seed: int = 0) -> list[dict]:
    import tracemalloc

    from distill.objectives import OBJECTIVES, Groups

    rng = np.random.default_rng(seed)
    out = []
    for name, cls in OBJECTIVES.items():
        if name == "regression":
            continue
        obj = cls()
        for sizes in ([width] * n_queries, [width] * n_queries + [long]):
            n = sum(sizes)
            s, t = rng.normal(size=n), rng.normal(size=n)
            line: dict = {
                "setting": "objective",
                "objective": name,
                "queries": len(sizes),
                "widest": max(sizes),
            }
            line["padded_cells_one_matrix"] = len(sizes) * max(sizes) ** obj.power
            line["cells_bucketed"] = int(sum(x**obj.power for x in sizes))
            forms = [("bucketed", obj.grad_hess)]
            if line["padded_cells_one_matrix"] * 8 * 6 < 4e9:  # the padded form, where it fits in a few GB
                forms.append(("one_matrix", obj._grad_hess))
            for form, fn in forms:
                g = Groups.from_sizes(sizes)
                fn(s, t, g)  # buckets built once per Groups, as boosting reuses them
                tracemalloc.start()

                def run(fn: Any = fn, g: Any = g, s: Any = s, t: Any = t) -> Any:
                    return fn(s, t, g)

                seconds, _ = best_of(run, 1)
                line[f"{form}_s"] = round(seconds, 3)
                line[f"{form}_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
                tracemalloc.stop()
            out.append(line)
    return out
