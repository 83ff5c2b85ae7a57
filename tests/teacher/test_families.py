"""Every reranker family scores exactly as sentence-transformers' `CrossEncoder.predict(activation_fn=Identity())`
does on the same folder (Hugging Face and sentence-transformers folders), and what is not a trained reranker is
refused before anything is scored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.config import PROJECT_ROOT
from distill.errors import ConfigError
from distill.teacher.engine import ScoringEngine
from distill.teacher.model import load_teacher
from tests.teacher import tiny_models

Q = ["cat on a mat", "markets", "fox", "yes dogs"] * 6
D = (
    ["the cat sat on the mat " * k for k in range(1, 9)]
    + ["stock markets fell sharply today"] * 8
    + ["a quick brown fox jumps over salmon " * k for k in range(1, 9)]
)
FAMILIES = tiny_models.ENCODERS + tiny_models.CAUSAL


def predict(folder: Path, queries, docs, prompt=None) -> np.ndarray:
    """The reference: sentence-transformers' own CrossEncoder on the same folder, raw logits."""
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(folder), device="cpu", activation_fn=torch.nn.Identity())
    out = ce.predict(list(zip(queries, docs)), batch_size=5, prompt=prompt, show_progress_bar=False)
    return out if out.ndim == 1 else out[:, 1] - out[:, 0]


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    """arch -> (Hugging Face folder, sentence-transformers CrossEncoder folder)."""
    out = {}
    for arch in FAMILIES:
        hf = tiny_models.build(arch, tmp_path_factory.mktemp(f"{arch}-hf"))
        out[arch] = (hf, tiny_models.st_folder(hf, tmp_path_factory.mktemp(f"{arch}-st")))
    return out


@pytest.mark.parametrize("layout", ["hf", "st"])
@pytest.mark.parametrize("arch", FAMILIES)
def test_family_matches_crossencoder_predict(family_dirs, arch, layout):
    folder = family_dirs[arch][0 if layout == "hf" else 1]
    ref = predict(folder, Q, D)
    assert ref.std() > 0.05  # scores spread: agreement within 1e-5 means something
    teacher = load_teacher(str(folder), device="cpu")
    assert teacher.family == ("causal_lm" if arch in tiny_models.CAUSAL else "encoder")
    perm = np.random.default_rng(0).permutation(len(Q))
    for budget in (64, 4096):
        got = ScoringEngine(teacher, batch_tokens=budget, chunk_pairs=7).score(Q, D)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
        shuffled = ScoringEngine(teacher, batch_tokens=budget).score(
            [Q[i] for i in perm], [D[i] for i in perm]
        )
        np.testing.assert_allclose(shuffled, ref[perm], atol=1e-5, rtol=0)


# pairs none of which the engine's probe sees: truncation on either side and on both, and odd text
OTHER_Q = ["Fish SALMON swim", "a " * 90 + "cat", "markets", "Ünïcode  dogs\tpark", "the cat sat " * 40]
OTHER_D = [
    "salmon swim upstream to spawn " * 30,
    "dogs chase cats",
    "",
    "park-dogs, (cats) & fish!",
    "mat " * 99,
]


@pytest.mark.parametrize("layout", ["hf", "st"])
@pytest.mark.parametrize("arch", FAMILIES)
def test_encoders_tokenise_through_the_backend_with_preprocess_ids(family_dirs, arch, layout):
    """Every encoder's pairs go through its tokenizer's backend (`BackendPairs`), and the ids and token types are
    preprocess's, also on pairs the probe never saw; the causal-LM rerankers keep preprocess (their templates)."""
    teacher = load_teacher(str(family_dirs[arch][0 if layout == "hf" else 1]), device="cpu")
    engine = ScoringEngine(teacher)
    engine.score(Q[:3], D[:3])
    if arch in tiny_models.CAUSAL:
        assert engine.tokenising == "preprocess"
        return
    assert engine.tokenising == "backend"
    got_ids, got_types = engine._tokenize(OTHER_Q, OTHER_D)
    want_ids, want_types = engine._preprocess(OTHER_Q, OTHER_D)
    assert max(len(i) for i in want_ids) == teacher.max_length  # truncation happened
    assert [i.tolist() for i in got_ids] == [i.tolist() for i in want_ids]
    assert (got_types is None) == (want_types is None)
    if want_types is not None:
        assert [t.tolist() for t in got_types] == [t.tolist() for t in want_types]


def test_a_preprocessing_step_the_backend_lacks_keeps_preprocess(family_dirs, monkeypatch):
    """A model whose preprocess changes the texts before its tokenizer (here: a word put before each query) is
    caught by the probe: the engine keeps preprocess, and the scores are predict's."""
    folder = family_dirs["bert"][0]
    teacher = load_teacher(str(folder), device="cpu")
    plain = teacher.ce.preprocess

    def worded(pairs, **kw):
        return plain([("fish " + q, d) for q, d in pairs], **kw)

    monkeypatch.setattr(teacher.ce, "preprocess", worded)
    engine = ScoringEngine(teacher, batch_tokens=256)
    got = engine.score(Q, D)
    assert engine.tokenising == "preprocess"
    np.testing.assert_allclose(got, predict(folder, ["fish " + q for q in Q], D), atol=1e-5, rtol=0)


def test_two_label_encoder_scores_relevant_minus_not(tmp_path):
    folder = tiny_models.build("bert", tmp_path / "m", num_labels=2)
    teacher = load_teacher(str(folder), device="cpu")
    assert teacher.num_labels == 2
    np.testing.assert_allclose(ScoringEngine(teacher).score(Q, D), predict(folder, Q, D), atol=1e-5)


def test_prompt_reaches_the_chat_template_and_changes_scores(family_dirs):
    folder = family_dirs["qwen3"][0]
    prompt = "Given a physics question retrieve abstracts that answer it"
    teacher = load_teacher(str(folder), device="cpu", prompt=prompt)
    ids = teacher.ce.preprocess([("cat", "mat")], prompt=teacher.prompt)["input_ids"][0].tolist()
    want = teacher.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert any(ids[i : i + len(want)] == want for i in range(len(ids)))  # the instruction is in the input
    got = ScoringEngine(teacher, batch_tokens=256).score(Q, D)
    np.testing.assert_allclose(got, predict(folder, Q, D, prompt=prompt), atol=1e-5)
    assert np.abs(got - predict(folder, Q, D)).max() > 1e-3


def test_sentence_transformers_folder_settings_are_honoured(family_dirs, tmp_path):
    """A CrossEncoder folder's LogitScore token ids (here: the true token only, bge-reranker-v2-gemma style),
    its saved default prompt and its max length are what the teacher uses."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.modules import LogitScore

    src = CrossEncoder(str(family_dirs["qwen2"][0]), device="cpu")
    yes = src.tokenizer.convert_tokens_to_ids("yes")
    src[1] = LogitScore(true_token_id=yes, false_token_id=None)
    src.prompts = {"web": "Given a web search query, retrieve relevant passages"}
    src.default_prompt_name = "web"
    src.max_seq_length = 24
    src.save(str(tmp_path / "st"))
    teacher = load_teacher(str(tmp_path / "st"), device="cpu")
    assert teacher.prompt == src.prompts["web"] and teacher.max_length == 24
    got = ScoringEngine(teacher, batch_tokens=128).score(Q, D)
    np.testing.assert_allclose(got, predict(tmp_path / "st", Q, D), atol=1e-5)


# ------------------------------------------------------------------------------------------------ refusals
def bare_encoder(tmp_path: Path) -> Path:
    from transformers import BertConfig, BertModel

    tok = tiny_models.wordpiece_tokenizer(token_types=True)
    BertModel(
        BertConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(tmp_path / "bare")
    tok.save_pretrained(tmp_path / "bare")
    return tmp_path / "bare"


def bi_encoder_folder(tmp_path: Path) -> Path:
    from sentence_transformers import SentenceTransformer, models

    word = models.Transformer(str(bare_encoder(tmp_path)))
    SentenceTransformer(modules=[word, models.Pooling(32)], device="cpu").save(str(tmp_path / "bi"))
    return tmp_path / "bi"


def headless_classifier(tmp_path: Path) -> Path:
    from safetensors.torch import load_file, save_file

    folder = tiny_models.build("bert", tmp_path / "cls")
    weights = load_file(folder / "model.safetensors")
    save_file(
        {k: v for k, v in weights.items() if not k.startswith("classifier.")},
        folder / "model.safetensors",
        metadata={"format": "pt"},
    )
    return folder


def causal_without_yes_no(tmp_path: Path) -> Path:
    tok = tiny_models.causal_tokenizer(None, with_yes_no=False)
    # "yes" is not a token: sentence-transformers would silently take [UNK]'s id as the true token
    assert "yes" not in tok.get_vocab() and tok.convert_tokens_to_ids("yes") == tok.unk_token_id
    torch.manual_seed(0)
    tiny_models.causal_model("qwen3", tok).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    return tmp_path / "lm"


REFUSALS = {
    "bare encoder": (bare_encoder, r"classifier\.bias, classifier\.weight are not in the checkpoint"),
    "bi-encoder folder": (bi_encoder_folder, r"bi-encoder \(SentenceTransformer\) folder"),
    "missing head weights": (headless_classifier, r"classifier\.bias, classifier\.weight are not in the"),
    "causal LM without yes/no": (
        causal_without_yes_no,
        r"causal LM whose tokenizer has no 'yes'/'no' tokens",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_untrained_heads_are_refused(case, tmp_path):
    make, match = REFUSALS[case]
    folder = make(tmp_path)
    with pytest.raises(ConfigError, match=match) as e:
        load_teacher(str(folder), device="cpu")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"teacher.model='{folder}' is not a trained reranker")
    assert f"teacher.train.base_model={folder}" in msg and "allow_untrained_head=true" in msg


def test_escape_hatch_scores_an_untrained_head_and_says_so(tmp_path, caplog):
    folder = bare_encoder(tmp_path)
    with caplog.at_level("WARNING"):
        teacher = load_teacher(str(folder), device="cpu", allow_untrained_head=True)
    assert teacher.untrained_head and "NOT a trained reranker" in caplog.text
    assert teacher.describe()["untrained_head"] is True
    assert np.isfinite(ScoringEngine(teacher).score(Q[:4], D[:4])).all()


def test_make_teacher_score_refuses_a_bare_encoder_in_one_line(tiny_sample_cfg, tmp_path):
    from distill.retrieval.candidates import run as run_candidates

    folder = bare_encoder(tmp_path)
    cfg = tiny_sample_cfg("retrieval.k=5")
    run_candidates(cfg)
    overrides = [
        f"paths.output_root={cfg.paths.output_root}",
        f"paths.data_root={cfg.paths.data_root}",
        "logger=none",
        f"data.path={cfg.data.path}",
        f"teacher.model={folder}",
        *(o for o in __import__("tests.conftest", fromlist=["TINY_SAMPLE"]).TINY_SAMPLE),
    ]
    proc = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts" / "teacher_score.py"), *overrides],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "not a trained reranker" in err[0] and "Traceback" not in proc.stderr
    assert not list((Path(cfg.paths.workspace) / "soft_labels").glob("part-*"))


def test_resume_with_another_prompt_is_refused(tiny_sample_cfg, family_dirs):
    from distill.errors import DistillError
    from distill.retrieval.candidates import run as run_candidates
    from distill.teacher.scoring import run as run_score

    folder = family_dirs["qwen3"][0]
    cfg = tiny_sample_cfg("retrieval.k=3", f"teacher.model={folder}", "teacher.prompt=find cats")
    run_candidates(cfg)
    run_score(cfg)
    meta = json.loads((Path(cfg.paths.workspace) / "soft_labels" / "manifest.json").read_text())
    assert meta["identity"]["teachers"][0]["prompt"] == "find cats"
    assert meta["identity"]["teachers"][0]["family"] == "causal_lm"
    with pytest.raises(DistillError, match="prompt 'find cats'.*prompt 'find dogs'"):
        run_score(tiny_sample_cfg("retrieval.k=3", f"teacher.model={folder}", "teacher.prompt=find dogs"))
