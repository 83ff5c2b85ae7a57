"""Load any reranker (hub id or local folder) as a teacher, through sentence-transformers' `CrossEncoder`.

One loader for every family, so the project scores exactly as `CrossEncoder.predict(..., activation_fn=Identity())`
does on the same folder:

- encoder cross-encoders (BERT/MiniLM, RoBERTa, XLM-R, ELECTRA, DeBERTa-v2, ModernBERT, ...; a
  `*ForSequenceClassification` head with one label = the relevance logit, or two = logit(relevant) - logit(not));
- causal-LM rerankers (Qwen3-Reranker, mxbai-rerank-v2, bge-reranker-v2-gemma style): a `*ForCausalLM` whose score
  is logit(true token) - logit(false token) at the last real token (sentence-transformers' `LogitScore`; "yes"/"no"
  unless the folder's `modules.json` names other ids), with left padding and the model's own chat template;
- sentence-transformers `CrossEncoder` folders: what `modules.json`, the saved prompts and the max length say.

A checkpoint whose scoring head would be newly initialised (a bare encoder, a bi-encoder folder, a
sequence-classification model with missing head weights, a causal LM without its true/false tokens) is refused
before anything is scored: transformers only logs "newly initialized" and the scores would be random.
`allow_untrained_head=True` scores anyway, for benchmarks only.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distill.errors import ConfigError
from distill.ir import fingerprint

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}
WEIGHT_FILES = (
    "*.safetensors",
    "*.bin",
    "config.json",
    "tokenizer.json",
    "vocab.txt",
    "*.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "merges.txt",
    "chat_template.jinja",
    "modules.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
    "*/config.json",
)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ConfigError(
            f"teacher.device={device!r} is not a torch device (use auto, cpu, cuda, cuda:1)"
        ) from e


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX tiles or AVX512-BF16, through oneDNN). Elsewhere
    bf16 is emulated and slower than fp32."""
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        f = getattr(torch.cpu, probe, None)
        try:
            if f is not None and f():
                return True
        except Exception:  # a private probe that changed: fall back to the kernel's flags
            break
    from distill.ir.timing import cpu_flags

    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


# what `teacher.dtype=int8` (distill/teacher/int8.py: OpenVINO with NNCF) needs: the `export` extra
INT8_MODULES = ("onnx", "openvino", "nncf")


def int8_refused(name: str) -> ConfigError:
    """The refusal of `teacher.dtype=int8` for a causal-LM reranker."""
    return ConfigError(
        f"teacher.dtype=int8 is static int8 for encoder cross-encoders; {name} is a causal-LM reranker: use "
        f"teacher.dtype=bf16 or fp32"
    )


def static_int8_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in INT8_MODULES)


def resolve_dtype(dtype: str, device: torch.device, calibrated: bool = False) -> str:
    """`auto` is fp16 on a GPU, bf16 on a CPU with native bf16 matrix units; on other CPUs static int8 where the
    caller calibrates it (`calibrated`: the scoring job, which keeps it only if it ranks the job's own pairs as
    fp32 does and is faster: distill/teacher/calibration.py) and OpenVINO is installed, fp32 elsewhere.

    fp16 rather than bf16 on a GPU: both run at the tensor cores' rate, but fp16 keeps 3 more mantissa bits, so it
    ranks like fp32 where bf16 reorders close scores. An fp16 overflow is caught (non-finite scores) with a hint to
    use bf16. On a CPU, bf16 pays only where the hardware multiplies it natively (docs/results.md: speed and
    ranking against fp32 on real weights)."""
    if dtype == "auto":
        if device.type == "cuda":
            return "fp16"
        if device.type != "cpu":
            return "fp32"
        if cpu_has_native_bf16():
            return "bf16"
        return "int8" if calibrated and static_int8_available() else "fp32"
    if dtype not in DTYPES:
        raise ConfigError(f"teacher.dtype={dtype!r}: use one of auto, {', '.join(DTYPES)}")
    if dtype == "int8" and device.type != "cpu":
        raise ConfigError(
            "teacher.dtype=int8 (static int8 through OpenVINO) runs on CPU only; use fp16 or bf16 on a GPU"
        )
    return dtype


def folder_hash(path: Path) -> str:
    """Content hash of a local model folder (weights, config, tokenizer, sentence-transformers modules): its
    identity when there is no revision."""
    return "sha256:" + fingerprint.of_folder(path, WEIGHT_FILES)


@dataclass
class TeacherModel:
    """A loaded teacher: the sentence-transformers `CrossEncoder` and what identifies its scores."""

    ce: Any  # sentence_transformers.CrossEncoder
    name: str
    revision: str
    max_length: int
    dtype: str
    device: torch.device
    family: str  # encoder | causal_lm
    num_labels: int
    prompt: str | None
    trust_remote_code: bool = False
    untrained_head: bool = False
    # int8: the calibrated graph standing in for the CrossEncoder's forward (distill/teacher/int8.py)
    graph: Any = None

    @property
    def tokenizer(self) -> Any:
        return self.ce.tokenizer

    @property
    def model(self) -> Any:
        """The underlying transformers model."""
        return self.ce.model

    def scores_from_output(self, scores: torch.Tensor) -> torch.Tensor:
        """fp32 relevance per row from the CrossEncoder's `scores` feature: the logit (one label or a
        `LogitScore`), or logit(relevant) - logit(not relevant) for two labels."""
        scores = scores.float()
        if scores.ndim == 1:
            return scores
        return scores[:, 0] if scores.shape[1] == 1 else scores[:, 1] - scores[:, 0]

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.name,
            "revision": self.revision,
            "family": self.family,
            "prompt": self.prompt,
            "trust_remote_code": self.trust_remote_code,
            **({"untrained_head": True} if self.untrained_head else {}),
        }


def position_limit(config: Any, tokenizer: Any) -> int:
    """Longest input the model accepts (RoBERTa-style models reserve padding_idx + 1 positions)."""
    limit = getattr(config, "max_position_embeddings", None) or 512
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= (getattr(config, "pad_token_id", 1) or 1) + 1
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < 1_000_000:
        limit = min(limit, tok_limit)
    return int(limit)


@contextlib.contextmanager
def loading_reports() -> Iterator[list[Any]]:
    """Collect transformers' weight-loading report (missing / mismatched keys) of every model loaded inside.

    transformers only logs newly initialised weights; its `output_loading_info` cannot reach the
    `from_pretrained` call that sentence-transformers makes, so the report function is wrapped for the call."""
    import transformers.modeling_utils as mu

    reports: list[Any] = []
    original = mu.log_state_dict_report

    def record(*args: Any, **kwargs: Any) -> Any:
        info = kwargs.get("loading_info")
        if info is not None:
            reports.append(info)
        return original(*args, **kwargs)

    mu.log_state_dict_report = record
    try:
        yield reports
    finally:
        mu.log_state_dict_report = original


def local_folder_kind(path: Path) -> str | None:
    """What a local folder holds when it is a sentence-transformers folder: "cross-encoder" or a description
    of the non-reranker it is (None for a plain Hugging Face folder)."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return None
    try:
        modules = json.loads(modules_file.read_text())
        st_cfg_file = path / "config_sentence_transformers.json"
        st_cfg = json.loads(st_cfg_file.read_text()) if st_cfg_file.is_file() else {}
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{modules_file}: unreadable sentence-transformers folder ({e})") from e
    types = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    model_type = str(st_cfg.get("model_type"))
    if model_type == "CrossEncoder" or any(t == "LogitScore" for t in types):
        return "cross-encoder"
    kind = {"SparseEncoder": "SPLADE (SparseEncoder)", "MultiVectorEncoder": "late-interaction"}.get(
        model_type, "bi-encoder (SentenceTransformer)"
    )
    return f"a sentence-transformers {kind} folder (modules: {', '.join(types)})"


NO_YES_NO = (
    "it is a causal LM whose tokenizer has no 'yes'/'no' tokens for the relevance logit (a reranker with other "
    "answer tokens needs a sentence-transformers CrossEncoder folder whose LogitScore module names them)"
)


def untrained_message(name: str, what: str) -> str:
    return (
        f"teacher.model={name!r} is not a trained reranker: {what}, so its scores would be random. Use a "
        f"reranker instead (a cross-encoder or LLM reranker id or folder), or fine-tune this model into one: "
        f'make train-teacher ARGS="teacher.train.base_model={name}" (then teacher.model=trained); '
        f"teacher.allow_untrained_head=true scores anyway, for benchmarks only"
    )


def head_problem(ce: Any, reports: list[Any]) -> str | None:
    """Why `ce` cannot score as loaded (newly initialised weights, no usable true/false tokens), or None."""
    missing = sorted(
        {k for r in reports for k in r.missing_keys} | {k[0] for r in reports for k in r.mismatched_keys}
    )
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        return f"its weights {shown} are not in the checkpoint and would be newly initialised"
    from sentence_transformers.cross_encoder.modules import LogitScore

    for module in ce:
        if isinstance(module, LogitScore):
            tok = ce.tokenizer
            vocab = len(tok)
            for label, tid in (("true", module.true_token_id), ("false", module.false_token_id)):
                if tid is None and label == "false":
                    continue
                if (
                    tid is None
                    or not 0 <= int(tid) < vocab
                    or (tok.unk_token_id is not None and tid == tok.unk_token_id)
                ):
                    return f"{NO_YES_NO} (its {label} token id {tid} is unusable)"
    return None


def _open_cross_encoder(
    name: str, source: str, revision: str | None, device: str, dt: str, trust_remote_code: bool
) -> tuple[Any, Any]:
    """sentence-transformers' CrossEncoder on `source` (raw logits), with the loading reports; what goes wrong
    while loading becomes one ConfigError saying what to do."""
    from sentence_transformers import CrossEncoder

    try:
        with loading_reports() as reports:
            ce = CrossEncoder(
                source,
                revision=revision,
                device=device,
                trust_remote_code=trust_remote_code,
                model_kwargs={"dtype": DTYPES[dt]},
                activation_fn=torch.nn.Identity(),
            )
        return ce, reports
    except OSError as e:
        raise ConfigError(
            f"teacher.model={name!r}: cannot load it as a Hugging Face model ({str(e).splitlines()[0]}). Give a "
            f"hub id, a local model folder, or 'trained' after `make train-teacher`"
        ) from e
    except Exception as e:
        if type(e).__name__ in ("SafetensorError", "UnpicklingError", "HeaderTooLarge", "EOFError"):
            raise ConfigError(
                f"teacher.model={name!r}: a weights file is damaged or truncated ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else 'unreadable'}); download or train it again"
            ) from e
        if not isinstance(e, ValueError):
            raise
        if "'yes' and/or 'no'" in str(e):
            raise ConfigError(untrained_message(name, NO_YES_NO)) from e
        if "trust_remote_code" in str(e):
            raise ConfigError(
                f"teacher.model={name!r} needs its own code: set teacher.trust_remote_code=true if you trust it"
            ) from e
        raise ConfigError(f"teacher.model={name!r}: {str(e).splitlines()[0]}") from e


def _check_head(ce: Any, reports: Any, name: str, allow_untrained_head: bool) -> str | None:
    """What is wrong with the scoring head (None: nothing), refused unless `allow_untrained_head`; the label
    count must be 1 or 2."""
    problem = head_problem(ce, reports)
    if problem is not None:
        if not allow_untrained_head:
            raise ConfigError(untrained_message(name, problem))
        log.warning(
            "!!! teacher.allow_untrained_head=true: %s is NOT a trained reranker (%s); its scores are "
            "random and fit for benchmarks only !!!",
            name,
            problem,
        )
    num_labels = int(ce.num_labels)
    if num_labels not in (1, 2):
        raise ConfigError(
            f"teacher.model={name!r} has {num_labels} labels; a cross-encoder needs 1 (a relevance "
            f"logit) or 2 (not relevant / relevant)"
        )
    return problem


def _max_length(ce: Any, name: str, max_length: int | None) -> int:
    """The length to score at: `max_length`, or the model's own; never beyond its position embeddings."""
    limit = position_limit(ce.model.config, ce.tokenizer)
    own = ce.max_seq_length or limit
    length = min(own, limit) if max_length is None else max_length
    if length > limit:
        log.warning("teacher.max_length=%d exceeds what %s accepts; using %d", length, name, limit)
        length = limit
    return int(length)


def load_teacher(
    name: str,
    *,
    revision: str | None = None,
    max_length: int | None = None,
    dtype: str = "fp32",
    device: str = "auto",
    compile: bool = False,
    prompt: str | None = None,
    trust_remote_code: bool = False,
    allow_untrained_head: bool = False,
    calibrated: bool = False,
) -> TeacherModel:
    """Load a reranker by hub id or local folder, in eval mode, on `device`, in `dtype`.

    `max_length=None` keeps the model's own limit (the folder's max length, capped at its position embeddings).
    `prompt=None` uses the folder's default prompt, if it saved one. `compile=True` compiles the transformers
    model (dynamic shapes; worth it for long GPU runs)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev, calibrated)
    local = Path(name).expanduser()
    if local.is_dir() and (kind := local_folder_kind(local)) not in (None, "cross-encoder"):
        what = f"it is {kind}, not a cross-encoder; its scoring head would be newly initialised"
        if not allow_untrained_head:
            raise ConfigError(untrained_message(name, what))
    ce, reports = _open_cross_encoder(
        name, str(local) if local.is_dir() else name, revision, str(dev), dt, trust_remote_code
    )
    problem = _check_head(ce, reports, name, allow_untrained_head)
    from sentence_transformers.cross_encoder.modules import LogitScore

    family = "causal_lm" if any(isinstance(m, LogitScore) for m in ce) else "encoder"
    num_labels = int(ce.num_labels)
    length = _max_length(ce, name, max_length)
    ce.max_seq_length = length
    ce.eval()
    if dt == "int8" and family != "encoder":
        if dtype != "auto":
            raise int8_refused(name)
        dt = "fp32"
    if compile:
        ce.model.compile(dynamic=True)
    rev = (
        folder_hash(local)
        if local.is_dir()
        else (revision or getattr(ce.model.config, "_commit_hash", None) or "unknown")
    )
    resolved_prompt = prompt if prompt is not None else ce.prompts.get(str(ce.default_prompt_name), None)
    return TeacherModel(
        ce=ce,
        name=name,
        revision=str(rev),
        max_length=int(length),
        dtype=dt,
        device=dev,
        family=family,
        num_labels=num_labels,
        prompt=resolved_prompt or None,
        trust_remote_code=bool(trust_remote_code),
        untrained_head=problem is not None,
    )
