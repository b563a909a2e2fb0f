"""Descriptions from an LLM: a real HTTP server speaking the OpenAI chat-completions protocol."""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hmf.logs import setup_logging
from hmf.text.llm import LLMError, LLMSettings, MalformedOutput, generate_descriptions, parse_answer
from hmf.text.prompts import make_prompts, read_prompts
from hmf.text.settings import text_settings

CLASSES = ["IDC", "ILC"]
KEY_ENV = "HMF_TEST_LLM_KEY"


class FakeOpenAI:
    """Chat-completions endpoint on 127.0.0.1 answering from a script of actions.

    Actions (one per request; the last repeats): ("auto",) answers with valid descriptions of
    the class named in the prompt; ("content", text) answers with ``text``; ("status", code)
    fails with that HTTP status; ("sleep", seconds) waits, then answers like "auto".
    """

    def __init__(self, actions, n=6):
        self.actions = list(actions)
        self.n = n
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                index = min(len(server.requests), len(server.actions)) - 1
                action = server.actions[index]
                try:
                    if action[0] == "status":
                        # like real endpoints, echo the credentials in the error message
                        message = f"scripted {action[1]}; credentials: {self.headers.get('Authorization')}"
                        self._send(
                            action[1],
                            {"error": {"message": message, "type": "server_error"}},
                            {"Retry-After": "0"} if action[1] == 429 else {},
                        )
                        return
                    if action[0] == "sleep":
                        time.sleep(action[1])
                    content = action[1] if action[0] == "content" else server.auto_answer(body)
                    self._send(
                        200,
                        {
                            "id": f"chatcmpl-{len(server.requests)}",
                            "object": "chat.completion",
                            "created": 0,
                            "model": body["model"],
                            "choices": [
                                {
                                    "index": 0,
                                    "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": content},
                                }
                            ],
                            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                        },
                    )
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (time-out test)
                    pass

            def _send(self, code, obj, extra_headers=None):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (extra_headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def auto_answer(self, body) -> str:
        prompt = body["messages"][-1]["content"]
        name = re.search(r'class "([^"]+)"', prompt).group(1)
        return json.dumps({"descriptions": [f"{name} description number {i} seen on H&E." for i in range(self.n)]})

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(actions, n=6):
        server = FakeOpenAI(actions, n)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def key(monkeypatch):
    value = "sk-hmf-" + secrets.token_hex(16)
    monkeypatch.setenv(KEY_ENV, value)
    return value


def llm_config(server, **llm):
    base = {
        "base_url": server.base_url,
        "model": "test-model",
        "api_key_env": KEY_ENV,
        "timeout_s": 5,
        "max_retries": 2,
        "backoff_s": 0.01,
        "n_per_class": 6,
    }
    return {"source": "llm", "llm": {**base, **llm}}


def llm_text(server, **llm):
    return text_settings(llm_config(server, **llm))


def test_success_writes_descriptions_and_provenance_without_key(serve, key, tmp_path):
    server = serve([("auto",)])
    log_file = tmp_path / "logs" / "prompts.log"
    setup_logging(str(log_file), level=logging.DEBUG)  # even DEBUG must not reveal the key
    try:
        out = tmp_path / "prompts" / "tcga_brca.json"
        data = make_prompts(out, "tcga_brca", CLASSES, llm_text(server))
    finally:
        setup_logging(None)
    assert len(server.requests) == 2  # one per class with the default template
    assert server.headers[0]["authorization"] == f"Bearer {key}"  # the key did reach the server
    body = server.requests[0]
    assert body["response_format"] == {"type": "json_object"}
    assert body["model"] == "test-model" and body["seed"] == 0
    assert '"IDC"' in body["messages"][-1]["content"] and "IDC, ILC" in body["messages"][-1]["content"]
    stored = read_prompts(out)
    assert stored["classes"] == CLASSES
    assert stored["descriptions"] == data["descriptions"]
    assert all(len(v) == 6 for v in stored["descriptions"].values())
    assert stored["descriptions"]["ILC"][0].startswith("ILC description")
    prov = stored["provenance"]
    assert prov["source"] == "llm" and prov["model"] == "test-model" and prov["classes"] == CLASSES
    assert len(prov["template_sha256"]) == 64 and prov["created"] and prov["requests"] == 2
    assert prov["base_url"] == server.base_url
    for path in [p for p in tmp_path.rglob("*") if p.is_file()]:
        assert key not in path.read_text(errors="replace"), f"API key leaked into {path}"
    assert log_file.stat().st_size > 0


def test_rerun_makes_no_request_and_keeps_hand_edits(serve, key, tmp_path):
    server = serve([("auto",)])
    out = tmp_path / "tcga_brca.json"
    make_prompts(out, "tcga_brca", CLASSES, llm_text(server))
    assert len(server.requests) == 2
    data = json.loads(out.read_text())
    data["descriptions"]["IDC"][0] = "Hand-written: cohesive glands in desmoplastic stroma."
    out.write_text(json.dumps(data))
    # same template, model and classes (other settings may differ): no request, edits kept
    make_prompts(out, "tcga_brca", CLASSES, llm_text(server, temperature=0.1, n_per_class=6))
    assert len(server.requests) == 2
    assert read_prompts(out)["descriptions"]["IDC"][0].startswith("Hand-written")
    # another model: asked again, file replaced
    make_prompts(out, "tcga_brca", CLASSES, llm_text(server, model="other-model"))
    assert len(server.requests) == 4
    assert read_prompts(out)["provenance"]["model"] == "other-model"
    assert not read_prompts(out)["descriptions"]["IDC"][0].startswith("Hand-written")
    # another template: asked again
    template = 'List {n} H&E descriptions of class "{class_name}" (classes: {classes}) as JSON {"descriptions": []}.'
    make_prompts(out, "tcga_brca", CLASSES, llm_text(server, model="other-model", template=template))
    assert len(server.requests) == 6
    assert server.requests[-1]["messages"][-1]["content"].startswith("List 6 H&E descriptions")


def test_one_request_template_needs_every_class(serve, key, tmp_path):
    template = "Give {n} descriptions for each of the classes {classes}; JSON object class -> list."
    good = json.dumps({c.lower(): [f"{c} text {i}" for i in range(6)] for c in CLASSES})  # case-insensitive keys
    missing = json.dumps({"IDC": [f"IDC text {i}" for i in range(6)]})
    server = serve([("content", missing), ("content", good)])
    out = tmp_path / "p.json"
    make_prompts(out, "tcga_brca", CLASSES, llm_text(server, template=template))
    assert len(server.requests) == 2
    assert read_prompts(out)["descriptions"]["ILC"][5] == "ILC text 5"


def test_malformed_answers_are_retried_then_fail_without_writing(serve, key, tmp_path):
    too_few = json.dumps({"descriptions": ["same", " same ", "SAME", "", "other"]})  # 2 distinct after cleaning
    server = serve([("content", "this is not JSON"), ("content", too_few), ("content", '["a list"]')])
    out = tmp_path / "p.json"
    with pytest.raises(LLMError) as err:
        make_prompts(out, "tcga_brca", CLASSES, llm_text(server, max_retries=2))
    assert len(server.requests) == 3
    assert "after 3 attempts" in str(err.value) and "malformed" in str(err.value)
    assert not out.exists() and not list(tmp_path.iterdir())  # no partial or temporary file


def test_malformed_then_valid_succeeds(serve, key, tmp_path):
    server = serve([("content", "{not json"), ("auto",)])
    make_prompts(tmp_path / "p.json", "tcga_brca", CLASSES, llm_text(server))
    assert len(server.requests) == 3  # IDC: bad, good; ILC: good


def test_server_error_then_success(serve, key, tmp_path):
    server = serve([("status", 500), ("status", 429), ("auto",)])
    make_prompts(tmp_path / "p.json", "tcga_brca", CLASSES, llm_text(server))
    assert len(server.requests) == 4
    assert read_prompts(tmp_path / "p.json")["provenance"]["requests"] == 4


def test_persistent_server_error_raises(serve, key, tmp_path):
    server = serve([("status", 503)])
    with pytest.raises(LLMError, match="HTTP 503"):
        make_prompts(tmp_path / "p.json", "tcga_brca", CLASSES, llm_text(server, max_retries=1))
    assert len(server.requests) == 2
    assert not (tmp_path / "p.json").exists()


def test_client_error_is_not_retried_and_echoed_key_is_scrubbed(serve, key, tmp_path):
    server = serve([("status", 401)])
    log_file = tmp_path / "prompts.log"
    setup_logging(str(log_file), level=logging.DEBUG)
    try:
        with pytest.raises(LLMError, match="HTTP 401") as err:
            make_prompts(tmp_path / "p.json", "tcga_brca", CLASSES, llm_text(server))
        logging.getLogger("test").error("failed: %s", err.value)
    finally:
        setup_logging(None)
    assert len(server.requests) == 1
    assert "credentials: Bearer ***" in str(err.value)
    assert key not in str(err.value) and key not in log_file.read_text()
    assert not (tmp_path / "p.json").exists()


def test_retried_errors_do_not_log_the_key(serve, key, tmp_path):
    server = serve([("status", 500), ("auto",)])
    log_file = tmp_path / "prompts.log"
    setup_logging(str(log_file), level=logging.DEBUG)
    try:
        make_prompts(tmp_path / "p.json", "tcga_brca", CLASSES, llm_text(server))
    finally:
        setup_logging(None)
    text = log_file.read_text()
    assert "HTTP 500" in text and "Bearer ***" in text and key not in text


def test_timeout_is_retried_then_reported(serve, key, tmp_path):
    server = serve([("sleep", 1.0)])
    started = time.monotonic()
    with pytest.raises(LLMError, match="timeout_s=0.2"):
        make_prompts(tmp_path / "p.json", "tcga_brca", CLASSES, llm_text(server, timeout_s=0.2, max_retries=1))
    assert time.monotonic() - started < 5
    assert len(server.requests) == 2
    assert not (tmp_path / "p.json").exists()


def test_timeout_then_success(serve, key, tmp_path):
    server = serve([("sleep", 1.0), ("auto",)])
    make_prompts(tmp_path / "p.json", "tcga_brca", CLASSES, llm_text(server, timeout_s=0.2))
    assert len(server.requests) == 3


def test_missing_key_variable_is_a_clear_error(serve, monkeypatch, tmp_path):
    monkeypatch.delenv(KEY_ENV, raising=False)
    server = serve([("auto",)])
    with pytest.raises(LLMError, match=KEY_ENV):
        make_prompts(tmp_path / "p.json", "tcga_brca", CLASSES, llm_text(server))
    assert server.requests == []
    assert not (tmp_path / "p.json").exists()


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match=r"text\.llm\.temprature: unknown key"):
        LLMSettings.from_config({"model": "m", "temprature": 1})
    with pytest.raises(ValueError, match="placeholders"):
        LLMSettings.from_config({"model": "m", "template": "describe the classes"})
    with pytest.raises(ValueError, match="n_per_class"):
        LLMSettings.from_config({"model": "m", "n_per_class": 0})


def test_parse_answer_cleans_and_checks():
    answer = json.dumps({"descriptions": ["  a  b ", "a b", "c", "d"]})
    assert parse_answer(answer, ["X"], 3) == {"X": ["a b", "c", "d"]}
    with pytest.raises(MalformedOutput, match="need 4"):
        parse_answer(answer, ["X"], 4)
    with pytest.raises(MalformedOutput, match="lacks classes"):
        parse_answer(json.dumps({"X": ["a"]}), ["X", "Y"], 1)
    with pytest.raises(MalformedOutput, match="expected strings"):
        parse_answer(json.dumps({"descriptions": ["a", 3]}), ["X"], 1)
    fenced = "```json\n" + json.dumps({"X": ["a"], "Y": ["b"]}) + "\n```"
    assert parse_answer(fenced, ["X", "Y"], 1) == {"X": ["a"], "Y": ["b"]}


def test_generate_descriptions_counts_requests(serve, key):
    server = serve([("auto",)], n=8)
    settings = LLMSettings.from_config({**llm_config(server)["llm"], "n_per_class": 7})
    descriptions, requests = generate_descriptions(["pN0", "pN0(i+)"], settings)
    assert requests == 2 and len(server.requests) == 2
    # The answer held 8; only the n_per_class first are kept.
    assert len(descriptions["pN0(i+)"]) == 7 and descriptions["pN0(i+)"][0].startswith("pN0(i+)")


def test_answers_are_bounded(serve, key, tmp_path):
    """A flood of long descriptions: each request caps the answer, over-long ones are dropped,
    and only n_per_class are kept."""
    flood = [f"IDC finding {i}: " + "x" * 2000 for i in range(300)]
    flood += [f"IDC short description {i} seen on H&E." for i in range(300)]
    server = serve([("content", json.dumps({"descriptions": flood}))])
    settings = LLMSettings.from_config({**llm_config(server)["llm"], "n_per_class": 6})
    descriptions, _ = generate_descriptions(["IDC"], settings)
    assert descriptions["IDC"] == [f"IDC short description {i} seen on H&E." for i in range(6)]
    assert 0 < server.requests[0]["max_tokens"] <= 256 + 6 * 1000

    only_long = serve([("content", json.dumps({"descriptions": flood[:300]}))])
    settings = LLMSettings.from_config({**llm_config(only_long)["llm"], "max_retries": 0})
    with pytest.raises(LLMError, match="at most 1000 characters, need 6"):
        generate_descriptions(["IDC"], settings)


# --- credentials in a server's answers are scrubbed; a planted key is never shown or stored ----

OTHER_TOKEN = "gsk_" + "Qw3rTy7uIo9pAs1dFg5hJk2lZx4cVb6nM8qW0eRt"


def test_credentials_echoed_in_answers_are_scrubbed_from_logs_and_errors(serve, key, tmp_path):
    """Malformed answers and error bodies that echo the key, another provider's key, a
    password or an Authorization header: none of them reaches the log or the error."""
    echo = f"Sorry. Authorization: Bearer {key}; other key {OTHER_TOKEN}; url http://bob:hunter2x@h/v1; password=s3cr3t"
    server = serve([("content", echo), ("status", 500), ("content", "{" + echo)])
    log_file = tmp_path / "prompts.log"
    setup_logging(str(log_file), level=logging.DEBUG)
    try:
        with pytest.raises(LLMError) as err:
            make_prompts(tmp_path / "p.json", "tcga_brca", CLASSES, llm_text(server, max_retries=2))
        logging.getLogger("test").error("failed: %s", err.value)
    finally:
        setup_logging(None)
    text = log_file.read_text() + str(err.value)
    assert "malformed answer" in text and "HTTP 500" in text and "Bearer ***" in text
    for secret in (key, OTHER_TOKEN, "hunter2x", "s3cr3t"):
        assert secret not in text, secret


def test_prompts_params_never_hold_the_key_variable():
    from hmf.settings import result_params
    from hmf.text.settings import prompts_params

    text = text_settings({"source": "llm", "llm": {"api_key_env": "MY_PROVIDER_KEY", "model": "m"}})
    params = json.dumps(result_params("text", prompts_params(text)))
    assert "api_key_env" not in params and "MY_PROVIDER_KEY" not in params


def _snakemake(workdir, *args, env):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--snakefile", str(workdir / "Snakefile"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=workdir,
        env=env,
    )


def _files_holding(folder, secret: str) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.workflow
def test_planted_key_is_in_no_log_stderr_or_metadata(tmp_path):
    """The prompts rule under Snakemake: a key whose server echoes it in answers and errors,
    then the same key pasted into text.llm.api_key_env, then a password in base_url. The key
    and the password are in no rule log, no output of Snakemake and no .snakemake/metadata."""
    import os

    from test_text_workflow import PROMPTS, SNAKEFILE, write_config

    planted = "gsk_" + secrets.token_hex(20)
    password = "pw-" + secrets.token_hex(8)
    env = {**os.environ, "HMF_PLANTED_KEY": planted}
    server = FakeOpenAI([("content", f"not JSON; you sent Bearer {planted}"), ("status", 500), ("auto",)])
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    llm = {"base_url": server.base_url, "model": "m1", "api_key_env": "HMF_PLANTED_KEY", "backoff_s": 0.01}
    try:
        write_config(tmp_path, {"source": "llm", "llm": llm})
        proc = _snakemake(tmp_path, PROMPTS, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert server.headers[0]["authorization"] == f"Bearer {planted}"  # the key was used
        log = (tmp_path / "logs/t/prompts/tcga_brca.log").read_text()
        assert "malformed answer" in log and "HTTP 500" in log  # the echoes were logged, scrubbed
        outputs = [proc.stdout + proc.stderr]

        (tmp_path / PROMPTS).unlink()
        write_config(tmp_path, {"source": "llm", "llm": {**llm, "api_key_env": planted}})
        proc = _snakemake(tmp_path, PROMPTS, env=env)
        assert proc.returncode != 0 and "config key text.llm.api_key_env: looks like a secret key" in proc.stderr
        outputs.append(proc.stdout + proc.stderr)

        base_url = server.base_url.replace("http://", f"http://user:{password}@")
        write_config(tmp_path, {"source": "llm", "llm": {**llm, "base_url": base_url}})
        proc = _snakemake(tmp_path, PROMPTS, env=env)
        assert proc.returncode != 0 and "config key text.llm.base_url: holds credentials" in proc.stderr
        outputs.append(proc.stdout + proc.stderr)
    finally:
        server.close()
    assert len(server.requests) == 4  # IDC: malformed, 500, valid; ILC: valid; nothing after
    for output in outputs:
        assert planted not in output and password not in output
    assert (tmp_path / ".snakemake/metadata").is_dir()
    for secret in (planted, password):
        assert _files_holding(tmp_path / ".snakemake/metadata", secret) == []
        assert _files_holding(tmp_path / "logs", secret) == []
        assert _files_holding(tmp_path / "results", secret) == []
