"""Each GBDT distillation objective: gradient and hessian against finite differences, loss against a plain
NumPy loop on 2-3 item lists, stability on large scores, groups of size 1, and all groups at once."""

import itertools
import math

import numpy as np
import pytest

from distill.errors import ConfigError
from distill.objectives import (
    OBJECTIVES,
    GroupObjective,
    Groups,
    ListMLEKD,
    ListNetKD,
    MarginMSE,
    RankNetKD,
    build_objective,
)


def sig(x):
    return 1 / (1 + math.exp(-x))


def ref_listnet(s, t, T=1.0):
    ps = np.exp(s) / np.exp(s).sum()
    pt = np.exp(np.array(t) / T) / np.exp(np.array(t) / T).sum()
    return -(pt * np.log(ps)).sum()


def ref_ranknet(s, t, T=1.0):
    total = 0.0
    for i, j in itertools.combinations(range(len(s)), 2):
        p = sig((t[i] - t[j]) / T)
        total += -p * math.log(sig(s[i] - s[j])) - (1 - p) * math.log(sig(s[j] - s[i]))
    return total


def ref_margin(s, t):
    return sum(((s[i] - s[j]) - (t[i] - t[j])) ** 2 for i, j in itertools.combinations(range(len(s)), 2))


def ref_listmle(s, t):
    order = sorted(range(len(s)), key=lambda i: -t[i])
    total = 0.0
    for k in range(len(order)):
        rest = [s[i] for i in order[k:]]
        total += math.log(sum(math.exp(x) for x in rest)) - s[order[k]]
    return total


def ref_regression(s, t):
    return 0.5 * sum((a - b) ** 2 for a, b in zip(s, t))


REFS = {
    "regression": ref_regression,
    "listnet_kd": ref_listnet,
    "ranknet_kd": ref_ranknet,
    "margin_mse": ref_margin,
    "listmle_kd": ref_listmle,
}
CASES = [([0.3, -1.2], [2.0, 0.5]), ([0.0, 0.4, -0.7], [1.0, 3.0, -2.0]), ([1.5, 1.5, 0.2], [0.1, 0.2, 0.3])]


@pytest.mark.parametrize("name", OBJECTIVES)
@pytest.mark.parametrize("s,t", CASES)
def test_loss_matches_numpy_reference(name, s, t):
    g = Groups.from_sizes([len(s)])
    assert OBJECTIVES[name]().loss(np.array(s), np.array(t), g) == pytest.approx(REFS[name](s, t), rel=1e-9)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_grad_and_hess_match_finite_differences(name):
    rng = np.random.default_rng(0)
    sizes = [3, 1, 5, 2]
    g = Groups.from_sizes(sizes)
    s, t = rng.normal(size=g.n_rows), rng.normal(size=g.n_rows) * 2
    obj = OBJECTIVES[name]()
    grad, hess = obj.grad_hess(s, t, g)
    eps = 1e-5
    for i in range(g.n_rows):
        e = np.zeros_like(s)
        e[i] = eps
        num_grad = (obj.loss(s + e, t, g) - obj.loss(s - e, t, g)) / (2 * eps)
        g_plus, _ = obj.grad_hess(s + e, t, g)
        g_minus, _ = obj.grad_hess(s - e, t, g)
        assert grad[i] == pytest.approx(num_grad, abs=1e-6)
        assert hess[i] == pytest.approx((g_plus[i] - g_minus[i]) / (2 * eps), abs=1e-5)  # diagonal hessian


def test_hand_computed_examples():
    g = Groups.from_sizes([2])
    s = np.zeros(2)
    np.testing.assert_allclose(
        ListNetKD().grad_hess(s, np.array([1.0, 0.0]), g)[0], [0.5 - sig(1), sig(1) - 0.5]
    )
    np.testing.assert_allclose(
        RankNetKD().grad_hess(s, np.array([2.0, 0.0]), g)[0], [0.5 - sig(2), sig(2) - 0.5]
    )
    grad, hess = MarginMSE().grad_hess(s, np.array([1.0, 0.0]), g)
    np.testing.assert_allclose(grad, [-2, 2])
    np.testing.assert_allclose(hess, [2, 2])
    np.testing.assert_allclose(ListMLEKD().grad_hess(s, np.array([1.0, 0.0]), g)[0], [-0.5, 0.5])


def test_temperature_softens_teacher():
    g = Groups.from_sizes([2])
    s, t = np.zeros(2), np.array([4.0, 0.0])
    sharp = ListNetKD(1.0).grad_hess(s, t, g)[0]
    soft = ListNetKD(4.0).grad_hess(s, t, g)[0]
    assert abs(soft[0]) < abs(sharp[0])
    assert ListNetKD(4.0).loss(s, t, g) == pytest.approx(ref_listnet([0, 0], [4, 0], 4.0))
    assert RankNetKD(2.0).loss(s, t, g) == pytest.approx(ref_ranknet([0, 0], [4, 0], 2.0))


@pytest.mark.parametrize("name", OBJECTIVES)
def test_stable_for_large_scores(name):
    g = Groups.from_sizes([3, 2])
    s = np.array([1e3, -1e3, 500.0, 800.0, -800.0])
    t = np.array([900.0, -900.0, 0.0, 1e3, 1e3])
    grad, hess = OBJECTIVES[name]().grad_hess(s, t, g)
    assert np.isfinite(grad).all() and np.isfinite(hess).all() and (hess >= 0).all()
    assert np.isfinite(OBJECTIVES[name]().loss(s, t, g))


@pytest.mark.parametrize("name", OBJECTIVES)
def test_group_of_one_has_zero_gradient(name):
    grad, hess = OBJECTIVES[name]().grad_hess(np.array([0.7]), np.array([3.0]), Groups.from_sizes([1]))
    assert hess[0] >= 0
    if name != "regression":  # a lone candidate has nothing to be ranked against
        assert grad[0] == pytest.approx(0.0)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_groups_at_once_equal_groups_alone(name):
    rng = np.random.default_rng(1)
    sizes = [4, 2, 3]
    s, t = rng.normal(size=9), rng.normal(size=9)
    obj = OBJECTIVES[name]()
    grad, hess = obj.grad_hess(s, t, Groups.from_sizes(sizes))
    start = 0
    for n in sizes:
        gg, hh = obj.grad_hess(s[start : start + n], t[start : start + n], Groups.from_sizes([n]))
        np.testing.assert_allclose(grad[start : start + n], gg, atol=1e-12)
        np.testing.assert_allclose(hess[start : start + n], hh, atol=1e-12)
        start += n


@pytest.mark.parametrize("name", [n for n in OBJECTIVES if n != "regression"])
def test_buckets_of_mixed_sizes_give_what_one_padded_matrix_gives(name, monkeypatch):
    """Many small groups and one long one, in buckets of a few cells: the same gradients, hessians and loss as the
    whole batch padded to the widest group (the objectives' reference form)."""
    import distill.objectives.groups as groups_mod

    rng = np.random.default_rng(3)
    sizes = list(rng.integers(1, 9, size=40)) + [60] + list(rng.integers(1, 9, size=10))
    s, t = rng.normal(size=sum(sizes)), rng.normal(size=sum(sizes))
    obj = OBJECTIVES[name]()
    g = Groups.from_sizes(sizes)
    one_matrix = obj._grad_hess(s, t, g), obj._loss(s, t, g)
    monkeypatch.setattr(groups_mod, "CELLS", 50)  # many buckets; the 60-candidate group alone in its own
    g = Groups.from_sizes(sizes)
    buckets = g.buckets(obj.power, groups_mod.CELLS)
    assert len(buckets) > 5 and sorted(np.concatenate([r for r, _ in buckets])) == list(range(sum(sizes)))
    assert max(len(b.sizes) for r, b in buckets if 60 in b.sizes) == 1
    grad, hess = obj.grad_hess(s, t, Groups.from_sizes(sizes))
    np.testing.assert_allclose(grad, one_matrix[0][0], atol=1e-12)
    np.testing.assert_allclose(hess, one_matrix[0][1], atol=1e-12)
    assert obj.loss(s, t, Groups.from_sizes(sizes)) == pytest.approx(one_matrix[1], rel=1e-12)


def test_groups_validate_sizes():
    with pytest.raises(ValueError, match="at least one row"):
        Groups.from_sizes([2, 0])
    with pytest.raises(ValueError, match="got 3 values for 4 rows"):
        Groups.from_sizes([2, 2]).matrix(np.zeros(3))


# ------------------------------------------------------------------ LightGBM / XGBoost through the adapters


def load_rank_example(shared_data, split):
    """LightGBM's lambdarank example (LibSVM rows + .query group sizes), real data."""
    folder = shared_data / "lightgbm_lambdarank"
    rows, labels = [], []
    for line in (folder / f"rank.{split}").read_text().splitlines():
        parts = line.split()
        labels.append(float(parts[0]))
        rows.append({int(k): float(v) for k, v in (p.split(":") for p in parts[1:])})
    X = np.zeros((len(rows), 301))
    for i, r in enumerate(rows):
        for k, v in r.items():
            X[i, k] = v
    sizes = np.array([int(x) for x in (folder / f"rank.{split}.query").read_text().split()])
    return X, np.array(labels), sizes


@pytest.mark.parametrize("name", ["listnet_kd", "ranknet_kd", "margin_mse", "listmle_kd"])
def test_lightgbm_and_xgboost_learn_the_same_objective(shared_data, name):
    import lightgbm as lgb
    import xgboost as xgb

    from distill.ir.metrics import evaluate
    from distill.objectives.adapters import lightgbm_objective, xgboost_objective

    X, y, sizes = load_rank_example(shared_data, "train")
    Xt, yt, sizes_t = load_rank_example(shared_data, "test")
    # soft "teacher" scores: the grades plus noise (floats, as a teacher's would be)
    soft = y + np.random.default_rng(0).normal(0, 0.3, len(y))
    obj = OBJECTIVES[name]()
    booster = lgb.train(
        {
            "objective": lightgbm_objective(obj),
            "learning_rate": 0.1,
            "num_leaves": 15,
            "verbose": -1,
            "seed": 0,
            "deterministic": True,
            "num_threads": 2,
        },
        lgb.Dataset(X, soft, group=sizes),
        num_boost_round=30,
    )
    dtrain = xgb.DMatrix(X, label=soft)
    dtrain.set_group(sizes)
    xbooster = xgb.train(
        {"eta": 0.1, "max_depth": 4, "seed": 0, "nthread": 2},
        dtrain,
        num_boost_round=30,
        obj=xgboost_objective(obj),
    )
    qid = np.repeat(np.arange(len(sizes_t)), sizes_t).astype(str)
    import pandas as pd

    qrels = pd.DataFrame({"qid": qid, "docid": np.arange(len(yt)).astype(str), "relevance": yt.astype(int)})
    random = evaluate(qrels, qrels.assign(score=np.random.default_rng(0).random(len(yt))))["ndcg@10"]
    for pred in (booster.predict(Xt), xbooster.predict(xgb.DMatrix(Xt))):
        ndcg = evaluate(qrels, qrels.assign(score=pred))["ndcg@10"]
        assert ndcg > random + 0.05, (name, ndcg, random)


def test_teacher_grades():
    from distill.objectives.adapters import teacher_grades

    g = Groups.from_sizes([5, 1])
    t = np.array([0.1, 5.0, 3.0, -2.0, 0.0, 7.0])
    np.testing.assert_array_equal(teacher_grades(t, g, 5, "quantile"), [2, 4, 3, 0, 1, 4])
    np.testing.assert_array_equal(teacher_grades(t, g, 2, "bins"), [0, 1, 1, 0, 0, 0])


class HalfSquaredError(GroupObjective):
    """A user's own objective, named by its dotted path as student.objective."""

    def _loss(self, s, t, g):
        return float(0.5 * ((g.matrix(s) - g.matrix(t)) ** 2).sum())

    def _grad_hess(self, s, t, g):
        return s - t, np.ones_like(s)


def test_objectives_are_built_by_name_or_dotted_path():
    assert build_objective("listnet_kd", temperature=2.0).temperature == 2.0
    assert isinstance(build_objective("margin_mse", temperature=2.0), MarginMSE)  # takes no temperature
    own = build_objective(f"{__name__}.HalfSquaredError", temperature=3.0)
    g = Groups.from_sizes([3, 2])
    s, t = np.array([1.0, 2, 3, 0, 1]), np.array([0.0, 2, 1, 1, 1])
    grad, hess = own.grad_hess(s, t, g)
    np.testing.assert_allclose(grad, s - t)
    np.testing.assert_allclose(hess, 1.0)
    assert own.loss(s, t, g) == pytest.approx(0.5 * ((s - t) ** 2).sum())
    with pytest.raises(ConfigError, match=r"student.objective='numpy.mean' is not an objective class"):
        build_objective("numpy.mean")
    with pytest.raises(ConfigError, match=r"student.objective: cannot import 'nowhere.Objective'"):
        build_objective("nowhere.Objective")


@pytest.mark.parametrize("name", ["listnet_kd", "ranknet_kd", "regression"])
def test_lightgbm_gets_float32_gradients_that_train_the_same_booster(name):
    """The LightGBM adapter hands float32 gradients and floored hessians over (computed so for a GroupObjective):
    the numbers LightGBM's own cast of the float64 ones gives, so the trees are the same as from float64."""
    import lightgbm as lgb

    from distill.objectives.adapters import MIN_HESS, floor_hessian, lightgbm_objective

    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 30, 60)
    n = int(sizes.sum())
    X, soft = rng.normal(size=(n, 5)), rng.normal(size=n) * 3
    obj = OBJECTIVES[name]()
    s = rng.normal(size=n) * 20  # saturated softmaxes: hessians under the floor
    data = lgb.Dataset(X, soft, group=sizes).construct()
    grad, hess = lightgbm_objective(obj)(s, data)
    g64, h64 = obj.grad_hess(
        s, data.get_label(), Groups.from_sizes(sizes)
    )  # LightGBM keeps labels as float32
    assert grad.dtype == hess.dtype == np.float32
    np.testing.assert_array_equal(grad, g64.astype(np.float32))
    np.testing.assert_array_equal(hess, floor_hessian(h64, MIN_HESS).astype(np.float32))

    def float64_objective(preds, data):  # the adapter as it was: float64 arrays, cast by LightGBM
        g, h = obj.grad_hess(preds, data.get_label(), Groups.from_sizes(data.get_group()))
        return g, floor_hessian(h, MIN_HESS)

    params = {"learning_rate": 0.1, "num_leaves": 7, "verbose": -1, "deterministic": True, "num_threads": 1}
    trees = [
        lgb.train(
            {**params, "objective": f}, lgb.Dataset(X, soft, group=sizes), num_boost_round=10
        ).dump_model()["tree_info"]
        for f in (lightgbm_objective(obj), float64_objective)
    ]
    assert trees[0] == trees[1]
