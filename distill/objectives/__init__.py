"""Distillation objectives for gradient-boosted rankers (LightGBM and XGBoost share one implementation).

No GBDT library learns a ranker from continuous teacher scores out of the box (LightGBM's lambdarank needs
integer labels, rank_xendcg truncates fractions, XGBoost's rank:ndcg checks for integers), so these are
written here: each module gives `loss` and `grad_hess` for scores `s` and teacher scores `t` over contiguous
query groups, vectorised over all groups at once (groups padded into one matrix).
"""

import inspect
from typing import Any

from distill.objectives.groups import GroupObjective, Groups
from distill.objectives.listmle import ListMLEKD
from distill.objectives.listnet import ListNetKD
from distill.objectives.margin_mse import MarginMSE
from distill.objectives.pointwise import SquaredError
from distill.objectives.ranknet import RankNetKD

OBJECTIVES = {
    "regression": SquaredError,
    "listnet_kd": ListNetKD,
    "ranknet_kd": RankNetKD,
    "margin_mse": MarginMSE,
    "listmle_kd": ListMLEKD,
}


def build_objective(name: str, **params: float) -> Any:
    """The objective `name` (a key of OBJECTIVES, or `module.Class` of your own, the `_target_` way: a class with
    `loss(s, t, groups)` and `grad_hess(s, t, groups)`, e.g. a GroupObjective subclass), given those of `params`
    (e.g. temperature) that its constructor takes."""
    from distill.config import load_callable
    from distill.errors import ConfigError

    cls = OBJECTIVES.get(name) or load_callable(name, "student.objective")
    if not (inspect.isclass(cls) and all(callable(getattr(cls, m, None)) for m in ("loss", "grad_hess"))):
        raise ConfigError(
            f"student.objective={name!r} is not an objective class (one with loss and grad_hess, e.g. a "
            f"distill.objectives.GroupObjective subclass)"
        )
    takes = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in params.items() if k in takes})  # type: ignore[no-any-return]


__all__ = [
    "OBJECTIVES",
    "GroupObjective",
    "Groups",
    "build_objective",
    "ListMLEKD",
    "ListNetKD",
    "MarginMSE",
    "RankNetKD",
    "SquaredError",
]
