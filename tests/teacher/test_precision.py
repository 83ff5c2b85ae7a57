import pandas as pd

from distill.data.prepare import load_dataset
from distill.teacher.precision import compare
from distill.workspace import Workspace


def test_precision_comparison_reports_each_dtype_against_fp32(gbdt_ws, tiny_model_dir):
    cfg = gbdt_ws()
    ws = Workspace.from_cfg(cfg)
    cands = pd.read_parquet(ws.candidates)
    cands = cands[cands.qid.isin(cands[cands.split == "test"].qid.unique()[:3])]
    lines = compare(str(tiny_model_dir), load_dataset(cfg), cands, repeats=1)
    by = {line["dtype"]: line for line in lines}
    assert set(by) == {"fp32", "bf16", "int8"} and all(line["pairs"] == len(cands) for line in lines)
    assert by["fp32"]["spearman_vs_fp32"] == 1.0 and by["fp32"]["kendall_per_query_vs_fp32"] == 1.0
    assert by["fp32"]["vs_fp32"] == 1.0 and 0 <= by["bf16"]["ndcg@10"] <= 1
    assert -1 <= by["int8"]["spearman_vs_fp32"] <= 1
