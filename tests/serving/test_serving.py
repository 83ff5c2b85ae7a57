"""The cascade server: the endpoint in-process (ASGI test client) on a tiny workspace, the bad-request table, the
depth controller on synthetic latency traces, start-up failures, and a short real-socket load test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from omegaconf import OmegaConf, open_dict

from distill.errors import ConfigError, StageNotReadyError
from distill.evaluation.cascade import DepthController
from distill.retrieval.candidates import run as run_candidates
from distill.serving.app import create_app
from distill.serving.service import CascadeService, LiveCosts, Running
from distill.students.base import FunctionScorer, write_student_json
from distill.students.stage import run as run_student
from distill.teacher.scoring import run as run_score
from distill.workspace import Workspace, staged_dir

SERVE = ["serve.n=10", "serve.ks=[0,2,5]", "serve.static_k=5", "serve.warmup_queries=2", "serve.sla_ms=1000"]


# a live student (it reads only what the server's rows carry): minus the document's length, so that its order
# differs from BM25's and the test can tell which ranked what
def train(cfg):
    ws = Workspace.from_cfg(cfg)
    with staged_dir(ws.model("short_first")) as tmp:
        write_student_json(tmp, name="short_first", loader=f"{__name__}:load", ws=ws, config=cfg.student)
    return {"student": "short_first"}


def load(model_dir: Path, ctx):
    lengths = ctx.ds.corpus.text.str.len()
    return [FunctionScorer("short_first", lambda rows: -lengths.loc[rows.docid.to_numpy()].to_numpy(float))]


@pytest.fixture
def serve_cfg(tiny_sample_cfg, tiny_model_dir):
    def cfg(*o):
        return tiny_sample_cfg(
            "retrieval.k=10",
            f"teacher.model={tiny_model_dir}",
            "teacher.max_length=64",
            "serve.student=short_first",
            *SERVE,
            *o,
        )

    c = cfg()
    run_candidates(c)
    run_score(c)
    with open_dict(c):
        c.student = OmegaConf.create({"_target_": f"{__name__}.train", "name": "short_first"})
    run_student(c)
    return cfg


@pytest.fixture
def client(serve_cfg):
    service = CascadeService(serve_cfg())
    with TestClient(create_app(service)) as c:
        yield c, service
    service.close()


def a_query(service: CascadeService) -> str:
    """A test query with at least 5 BM25 candidates."""
    for text in service.ds.queries.text:
        if len(service.index.search([text], 10)[0][0]) >= 5:
            return str(text)
    raise AssertionError("no query with 5 candidates")


def test_search_answers_the_cascade(client):
    import torch
    from sentence_transformers import CrossEncoder

    c, service = client
    q = a_query(service)
    r = c.get("/search", params={"q": q, "k": 4})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"results", "n", "teacher_k", "timings_ms"}
    assert body["teacher_k"] == 5 and len(body["results"]) == 4
    assert set(body["timings_ms"]) == {"queue", "retrieval", "student", "teacher", "total"}
    # the student's top 5 of BM25's top 10 (shortest documents first), reordered by the teacher
    pos, _ = service.index.search([q], 10)
    docids = service.docids[pos[0]]
    lengths = service.ds.corpus.text.str.len().loc[docids].to_numpy()
    head = docids[np.argsort(lengths, kind="stable")[:5]]
    ce = CrossEncoder(str(service.engine.teacher.name), device="cpu", activation_fn=torch.nn.Identity())
    ref = ce.predict([(q, t) for t in service.ds.doc_texts(list(head))])
    want = head[np.argsort(-np.asarray(ref), kind="stable")][:4]
    assert [x["docid"] for x in body["results"]] == list(want)
    np.testing.assert_allclose([x["score"] for x in body["results"]], np.sort(ref)[::-1][:4], atol=1e-4)
    assert [x["rank"] for x in body["results"]] == [1, 2, 3, 4]
    assert {x["scored_by"] for x in body["results"]} == {"teacher"}
    # a deeper answer than the teacher's head: the tail is the student's, on its own scale, ranked after
    tail = c.get("/search", params={"q": q, "k": 8}).json()["results"]
    assert [x["scored_by"] for x in tail] == ["teacher"] * 5 + ["student"] * 3
    assert [x["rank"] for x in tail] == list(range(1, 9))


def test_health_info_and_prometheus_metrics(client):
    c, service = client
    assert c.get("/health").status_code == 200
    c.get("/search", params={"q": a_query(service)})
    c.get("/search", params={"q": ""})
    info = c.get("/info").json()
    assert info["student"] == "short_first" and info["policy"] == "dynamic" and info["ks"] == [0, 2, 5]
    text = c.get("/metrics").text
    for line in [
        'distill_requests_total{code="200"} 1.0',
        'distill_requests_total{code="422"} 1.0',
        "distill_request_latency_seconds_count 1.0",
        "distill_teacher_on_ratio 1.0",
        "distill_teacher_k 5.0",
        "distill_queue_depth 0.0",
    ]:
        assert line in text


@pytest.mark.parametrize(
    "params,message",
    [
        ({"q": ""}, "q is empty"),
        ({"q": "   "}, "q is empty"),
        ({}, "q is empty"),
        ({"q": "x" * 10_000}, "10000 characters; the limit is serve.max_query_chars=1000"),
        ({"q": "cat", "k": "0"}, "k=0 is out of range"),
        ({"q": "cat", "k": "101"}, "k=101 is out of range"),
        ({"q": "cat", "k": "ten"}, "k='ten' is not a whole number"),
        ({"q": "cat", "k": "\u0663"}, "is not a whole number"),  # an Arabic-Indic three: int() would take it
        ({"q": "cat", "k": "1_0"}, "k='1_0' is not a whole number"),
        ({"q": "cat", "lang": "en"}, r"unknown parameter\(s\) \['lang'\]"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving(client, params, message):
    import re

    c, service = client
    r = c.get("/search", params=params)
    assert r.status_code == 422 and re.search(message, r.json()["detail"])
    assert c.get("/search", params={"q": a_query(service)}).status_code == 200


def test_a_query_without_candidates_is_an_empty_answer(client):
    c, _ = client
    body = c.get("/search", params={"q": "zzzzqqqq"}).json()
    assert body["results"] == [] and body["n"] == 0


def test_a_student_of_precomputed_features_refuses_unknown_queries(client):
    c, service = client
    service.student.live = False  # as the GBDT students' scorers are
    r = c.get("/search", params={"q": "words the dataset never asked"})
    assert r.status_code == 422 and "scores only the dataset's own queries" in r.json()["detail"]
    assert c.get("/search", params={"q": a_query(service)}).status_code == 200  # a dataset query still works


def test_start_fails_with_the_stage_to_run(tiny_sample_cfg, tiny_model_dir, serve_cfg):
    cfg = tiny_sample_cfg(
        "retrieval.k=10", f"paths.workspace={Path(serve_cfg().paths.workspace).parent / 'x'}"
    )
    with pytest.raises(StageNotReadyError, match="make candidates"):
        CascadeService(cfg)
    with pytest.raises(StageNotReadyError, match="make train-teacher"):
        CascadeService(serve_cfg("teacher.model=trained"))
    with pytest.raises(ConfigError, match=r"serve.student='nope'.*trained: \['short_first'\]"):
        CascadeService(serve_cfg("serve.student=nope"))
    ws = Workspace.from_cfg(serve_cfg())
    (ws.model("short_first") / "student.json").unlink()
    with pytest.raises(StageNotReadyError, match="make train-student"):
        CascadeService(serve_cfg())


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("serve.policy", "fast", "use dynamic or static"),
        ("serve.static_k", "7", "must be one of serve.ks"),
        ("serve.ks", "[0,50]", "each depth must be <= serve.n"),
        ("serve.raise_margin", "1.5", r"must be in \(0, 1\]"),
        ("loadtest.load.burst_s", "99", r"must be in \[0, loadtest.load.burst_every_s\]"),
        ("loadtest.policies", "[fast]", "use static and/or dynamic"),
    ],
)
def test_bad_serve_options(tiny_sample_cfg, key, value, message):
    from distill.config import validate

    with pytest.raises(ConfigError, match=f"{key}.*{message}"):
        validate(tiny_sample_cfg(*SERVE, f"{key}={value}"))


# ------------------------------------------------------------------------------------------ the controller
COST = {0: 10.0, 10: 40.0, 50: 90.0}  # service ms by depth


def replay(ctl: DepthController, waits_ms: list[float], dt_s: float = 0.05) -> list[int]:
    return [ctl.choose(i * dt_s, w, COST.__getitem__) for i, w in enumerate(waits_ms)]


def test_controller_sheds_under_a_burst_and_restores_when_calm():
    ctl = DepthController([0, 10, 50], sla_ms=100.0, hold_s=1.0)
    calm, burst = [0.0] * 40, list(np.linspace(20, 300, 40))
    ks = replay(ctl, calm + burst + calm + calm)
    assert set(ks[:40]) == {50}
    assert ks[70:80] == [0] * 10  # waits above 90 ms: only the teacher-off service fits
    assert ks[-1] == 50  # calm again: back to the deepest
    assert ctl.changes == 3  # down in steps (50 -> 10 -> 0), up once after hold_s of calm


def test_controller_does_not_flap_at_the_edge_of_capacity():
    # waits that alternate just under and just over what k=50 allows (100 - 90 = 10 ms)
    edge = [5.0, 15.0] * 100
    plain = DepthController([0, 10, 50], sla_ms=100.0, raise_margin=1.0, hold_s=0.0)
    damped = DepthController([0, 10, 50], sla_ms=100.0)
    replay(plain, edge)
    ks = replay(damped, edge)
    assert plain.changes >= 150  # without hysteresis the depth changes on almost every request
    assert damped.changes == 1 and set(ks[1:]) == {10}  # with it, it steps down once and stays


def test_static_controller_ignores_the_load():
    ctl = DepthController([0, 10, 50], static_k=10)
    assert set(replay(ctl, [0.0, 500.0, 5000.0])) == {10} and ctl.changes == 0


def test_costs_of_unused_depths_recover_so_the_teacher_comes_back_after_a_burst():
    """A burst inflates the deep depth's estimate; calm traffic at a shallower depth no longer measures it. The
    estimate relaxes toward its warm-up figure (half-life recovery_s), and the controller returns to the deepest
    depth; with recovery off it stays shallow for good (the behaviour this replaces)."""
    for recovery_s, back in ((10.0, True), (0.0, False)):
        costs = LiveCosts(
            Running(5.0), {0: Running(0.0), 10: Running(20.0), 50: Running(60.0)}, 0.5, 0.0, recovery_s
        )
        ctl = DepthController([0, 10, 50], sla_ms=100.0, hold_s=1.0)
        for i in range(6):  # a burst: k=50 measured at 300 ms
            costs.update(5.0, 50, 300.0, now_s=i * 0.1)
        assert ctl.choose(1.0, 0.0, costs.service_ms) == 10
        for i in range(300):  # 30 s of calm requests at k=10
            now = 1.0 + i * 0.1
            k = ctl.choose(now, 0.0, costs.service_ms)
            costs.update(5.0, k, 20.0 if k == 10 else 60.0, now_s=now)
        assert (ctl.k == 50) is back


def test_live_costs_plan_with_the_tail():
    costs = LiveCosts(Running(10.0), {0: Running(0.0), 5: Running(20.0)}, smoothing=0.5, deviations=2.0)
    assert costs.service_ms(5) == 30.0
    costs.update(10.0, 5, 40.0, now_s=0.0)  # teacher: dev 0 + 0.5 x (|40 - 20| - 0) = 10; mean 30
    assert costs.service_ms(5) == pytest.approx(10.0 + 30.0 + 2 * 10.0)
    costs.update(
        10.0, 0, 99.0, now_s=0.0
    )  # a shed request teaches nothing about the teacher (no time passed)
    assert costs.teacher[5].mean == 30.0


# ------------------------------------------------------------------------------------------ real sockets
def test_short_load_test_over_real_sockets(serve_cfg):
    from distill.serving.loadtest import run as run_loadtest

    cfg = serve_cfg(
        "loadtest.load.duration_s=3",
        "loadtest.load.burst_every_s=3",
        "loadtest.load.burst_s=1",
        "loadtest.max_requests=40",
        "loadtest.start_timeout_s=120",
    )
    out = run_loadtest(cfg)
    ws = Workspace.from_cfg(cfg)
    saved = json.loads((ws.root / "loadtest.json").read_text())
    assert set(saved["policies"]) == {"static", "dynamic"} and saved["capacity_qps"] > 0
    for policy, r in out["policies"].items():
        served = {p["phase"]: p for p in r["served"]}
        assert r["failed_requests"] == 0
        assert 0 < served["all"]["requests"] <= 40
        assert served["all"]["requests"] == sum(p["requests"] for k, p in served.items() if k != "all")
        assert 0 <= served["all"]["ndcg@10"] <= 1 and served["all"]["p99_ms"] >= served["all"]["p50_ms"] > 0
        sim = {p["phase"]: p for p in r["simulated"]}
        assert sim["all"]["requests"] == served["all"]["requests"]
        if policy == "static":
            assert served["all"]["mean_k"] == 5 and sim["all"]["mean_k"] == 5
    assert "| static | served | all |" in (ws.root / "loadtest.md").read_text()
    assert pd.notna(out["capacity_qps"])


def test_served_ndcg_follows_the_served_order_not_the_scores():
    """The teacher's head carries logits and the student's tail its own scores: sorting by score would put a
    student-scored tail document above the teacher's head. The load test reads the ranks."""
    from distill.serving.loadtest import served_ndcg

    qrels = pd.DataFrame({"qid": ["q"], "docid": ["good"], "relevance": [1]})
    answer = {
        "results": [
            {"docid": "good", "rank": 1, "score": -3.0, "scored_by": "teacher"},
            {"docid": "bad", "rank": 2, "score": 40.0, "scored_by": "student"},
        ]
    }
    assert served_ndcg(qrels, ["q"], [answer])[0] == pytest.approx(1.0)


def test_a_token_guards_every_endpoint_but_health(serve_cfg):
    service = CascadeService(serve_cfg())
    try:
        with TestClient(create_app(service, token="s3cret")) as c:
            assert c.get("/health").status_code == 200
            for path in ("/search?q=cat", "/info", "/metrics", "/openapi.json"):
                assert c.get(path).status_code == 401
                assert c.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert c.get("/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    finally:
        service.close()


def test_a_non_loopback_host_needs_allow_remote_and_a_token(tiny_sample_cfg, monkeypatch):
    from distill.config import validate
    from distill.serving.stage import serve_token

    with pytest.raises(ConfigError, match=r"serve.host='0.0.0.0'.*loopback only.*serve.allow_remote=true"):
        validate(tiny_sample_cfg(*SERVE, "serve.host=0.0.0.0"))
    remote = tiny_sample_cfg(*SERVE, "serve.host=0.0.0.0", "serve.allow_remote=true")
    monkeypatch.delenv("DISTILL_SERVE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="needs a token: set serve.token"):
        serve_token(remote.serve)
    monkeypatch.setenv("DISTILL_SERVE_TOKEN", "t0k")
    assert serve_token(remote.serve) == "t0k"


def test_a_precomputed_feature_student_refuses_a_depth_beyond_the_candidates(serve_cfg, monkeypatch):
    from distill.students.base import FunctionScorer as FS

    monkeypatch.setattr(
        "distill.serving.service.pick_student",
        lambda ws, ctx, name, backend="torch": FS("gbdt_like", lambda r: r.bm25, live=False),
    )
    with pytest.raises(
        ConfigError, match=r"serve.n=20: student 'gbdt_like' scores precomputed features.*top 10"
    ):
        CascadeService(serve_cfg("serve.n=20"))


def test_a_server_that_is_not_ours_on_the_port_is_not_taken_for_ours(tmp_path):
    """Another program answering on the port, while our child failed to start its own: not up."""
    import subprocess
    import sys
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from distill.dashboard import wait_until_up

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"status": "ok", "pid": 1}')

        def log_message(self, *a):
            pass

    other = HTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{other.server_port}/health"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not wait_until_up(url, child, seconds=3)  # nothing of the child's listens there
        assert not wait_until_up(url, child, seconds=3, ours=lambda b: b'"pid": %d' % child.pid in b)
    finally:
        child.kill()
        other.shutdown()
