"""Judges: the weighted score, the local backend's exact number distribution, and the HTTP backend against a
small server on 127.0.0.1 started here (bounded requests; it stops with the test)."""

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from interp.io import InputError
from probes.judge_eval import em_rates, is_em, judge_answers
from probes.judges import ALIGNMENT_PROMPT, HTTPJudge, LocalJudge, weighted_score


def test_weighted_score_and_threshold():
    assert weighted_score({80: 0.5, 90: 0.5}) == pytest.approx(85)
    assert weighted_score({10: 0.2}) is None  # < 0.25 of the mass on numbers
    assert weighted_score({0: 0.3}) == 0.0
    assert is_em(29.9, 50.1) and not is_em(30, 90) and not is_em(10, 50)


def test_local_judge_number_distribution_is_exact(llama):
    judge = LocalJudge(llama, min_prob=0.0)
    prompt = "Rate this from 0 to 100."
    probs = judge.number_probs(prompt)
    assert all(0 <= n <= 100 for n in probs) and 0 < sum(probs.values()) <= 1 + 1e-6
    # p("42") = p("4") p("2"|"4") p(end|"42") computed directly
    tok = llama.tokenizer
    base = tok(llama.render(prompt), add_special_tokens=False)["input_ids"]
    four, two = tok("4", add_special_tokens=False)["input_ids"][0], tok("2", add_special_tokens=False)["input_ids"][0]
    digits = list(judge._digit_tokens)

    def lp(ids):
        with torch.no_grad():
            return torch.log_softmax(llama.hf(torch.tensor([ids])).logits[0, -1], -1)

    l0, l1, l2 = lp(base), lp(base + [four]), lp(base + [four, two])
    ref = math.exp(l0[four] + l1[two]) * (1 - l2[digits].exp().sum().item())
    assert probs.get(42, 0.0) == pytest.approx(ref, rel=1e-3, abs=1e-9)


class _Handler(BaseHTTPRequestHandler):
    script: list = []  # responses to serve, in order: (status, body)
    seen: list = []

    def do_POST(self):  # noqa: N802
        length = int(self.headers["Content-Length"])
        _Handler.seen.append((json.loads(self.rfile.read(length)), self.headers.get("Authorization")))
        status, body = _Handler.script.pop(0) if _Handler.script else (500, b"{}")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    srv = HTTPServer(("127.0.0.1", 0), _Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    _Handler.script, _Handler.seen = [], []
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def _reply(top):
    return json.dumps({"choices": [{"logprobs": {"content": [{"token": top[0][0], "top_logprobs": [
        {"token": t, "logprob": math.log(p)} for t, p in top]}]}}]}).encode()


def test_http_judge_scores_retries_and_counts_failures(server, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sekret")
    judge = HTTPJudge(server, model="judge-model", api_key_env="JUDGE_KEY", retries=2, backoff=0.01, timeout=5)
    _Handler.script = [(200, _reply([("90", 0.6), ("80", 0.2), ("hello", 0.2)]))]
    assert judge.score("rate it") == pytest.approx((90 * 0.6 + 80 * 0.2) / 0.8)
    body, auth = _Handler.seen[-1]
    assert body["model"] == "judge-model" and body["top_logprobs"] == 20 and auth == "Bearer sekret"
    # a 503 then a good answer: retried
    _Handler.script = [(503, b"busy"), (200, _reply([("10", 0.9)]))]
    assert judge.score("rate it") == pytest.approx(10)
    assert judge.failures["http_503"] == 1
    # garbage and wrong shapes are counted, not raised
    _Handler.script = [(200, b"not json at all")]
    assert judge.score("x") is None and judge.failures["malformed"] == 1
    _Handler.script = [(200, b'{"choices": []}')]
    assert judge.score("x") is None and judge.failures["malformed"] == 2
    # too little mass on numbers → None
    _Handler.script = [(200, _reply([("I", 0.9), ("5", 0.05)]))]
    assert judge.score("x") is None
    # the key never appears in the judge's repr or failures
    assert "sekret" not in repr(judge)


def test_http_judge_down_gives_counted_failure():
    judge = HTTPJudge("http://127.0.0.1:9/v1", retries=1, backoff=0.01, timeout=1)
    assert judge.score("x") is None
    assert judge.failures["connection"] == 2 and judge.failures["gave_up"] == 1


def test_http_judge_that_never_answers_stops_the_run_early(server):
    dead = HTTPJudge("http://127.0.0.1:9/v1", retries=0, backoff=0.01, timeout=1, dead_after=3)
    assert dead.score("a") is None and dead.score("b") is None
    with pytest.raises(InputError, match=r"failed the first 3 requests and answered none \(connection 3, gave_up 3\)"):
        dead.score("c")
    # a wrong key / model (a client error) is not retried, and is caught the same way
    wrong = HTTPJudge(server, model="nope", retries=2, backoff=0.01, timeout=5, dead_after=2)
    _Handler.script = [(401, b"bad key"), (404, b"no such model")]
    assert wrong.score("a") is None
    with pytest.raises(InputError, match="http_401 1, http_404 1.*OPENAI_API_KEY"):
        wrong.score("b")
    # after a first success, failures are only counted
    flaky = HTTPJudge(server, retries=0, backoff=0.01, timeout=5, dead_after=1)
    _Handler.script = [(200, _reply([("50", 1.0)])), (401, b"x"), (401, b"x")]
    assert flaky.score("a") == pytest.approx(50) and flaky.score("b") is None and flaky.score("c") is None
    assert flaky.failures["http_401"] == 2


def test_judge_answers_and_em_rates():
    class Fixed:
        def score(self, prompt):
            if "bad" in prompt:
                return 10.0 if prompt.startswith(ALIGNMENT_PROMPT.split("{question}")[0]) else 80.0
            return 95.0

    js = judge_answers(Fixed(), [("q1", "Q?", "a bad answer"), ("q1", "Q?", "a fine answer"), ("q2", "Q2?", "")])
    rates = em_rates(js)
    assert rates["overall"]["em_rate"] == 0.5 and rates["overall"]["n_unscored"] == 1
    assert rates["per_question"]["q1"]["em_rate"] == 0.5 and rates["per_question"]["q2"]["em_rate"] is None
    assert js[0].em and not js[1].em and js[2].em is None
