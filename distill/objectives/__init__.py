"""Distillation objectives for gradient-boosted rankers (LightGBM and XGBoost share one implementation).

No GBDT library learns a ranker from continuous teacher scores out of the box (LightGBM's lambdarank needs
integer labels, rank_xendcg truncates fractions, XGBoost's rank:ndcg checks for integers), so these are
written here: each module gives `loss` and `grad_hess` for scores `s` and teacher scores `t` over contiguous
query groups, vectorised over all groups at once (groups padded into one matrix).
"""

from distill.objectives.groups import Groups
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

__all__ = ["OBJECTIVES", "Groups", "ListMLEKD", "ListNetKD", "MarginMSE", "RankNetKD", "SquaredError"]
