import numpy as np
import pandas as pd

from distill.data.prepare import load_dataset
from distill.retrieval.candidates import run as run_candidates
from distill.workspace import Workspace


def test_bm25_wordpiece_reads_a_python_only_tokenizer_as_its_fast_twin(
    tiny_sample_cfg, tmp_path, monkeypatch
):
    """A teacher whose tokenizer has no Rust backend (a slow tokenizer) gets the same lexical baseline as the fast
    tokenizer of the same vocabulary."""
    import transformers

    from distill.evaluation.rankers import subword_bm25
    from distill.teacher.train import TeacherTrainConfig, build_scratch_model, train_texts

    cfg = tiny_sample_cfg()
    run_candidates(cfg)
    ds = load_dataset(cfg)
    ws = Workspace.from_cfg(cfg)
    folder = build_scratch_model(train_texts(ds), TeacherTrainConfig(), tmp_path / "teacher")
    cfg.teacher.model = str(folder)
    cands = pd.read_parquet(ws.candidates)
    fast = subword_bm25(cfg, ds, ws, cands)
    load = transformers.AutoTokenizer.from_pretrained

    class PythonOnly:
        """The tokenizer without its Rust backend, as a tokenizer with no fast version has none (transformers 5
        gives BERT's a backend even for use_fast=False)."""

        is_fast = False

        def __init__(self, tok):
            self.tok = tok

        def __call__(self, *a, **k):
            return self.tok(*a, **k)

        def convert_ids_to_tokens(self, ids):
            return self.tok.convert_ids_to_tokens(ids)

    monkeypatch.setattr(
        transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: PythonOnly(load(*a, **k))
    )
    slow = subword_bm25(cfg, ds, ws, cands)
    assert [r.name for r in fast] == [r.name for r in slow] == ["bm25_wordpiece"]
    np.testing.assert_allclose(slow[0].scores, fast[0].scores, rtol=1e-6)
    assert np.ptp(fast[0].scores) > 0
