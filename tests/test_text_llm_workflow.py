"""The prompts rule with text.source llm under real Snakemake, against a local OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import secrets

import pytest
from test_text_llm import FakeOpenAI
from test_text_workflow import PROMPTS, SNAKEFILE, snakemake, write_config

pytestmark = pytest.mark.workflow


def test_llm_prompts_rule_caches_and_never_stores_the_key(tmp_path):
    server = FakeOpenAI([("auto",)])
    key = "sk-hmf-" + secrets.token_hex(16)
    env = {**os.environ, "HMF_WORKFLOW_KEY": key}
    llm = {"base_url": server.base_url, "model": "m1", "api_key_env": "HMF_WORKFLOW_KEY", "backoff_s": 0.01}
    try:
        (tmp_path / "Snakefile").write_text(SNAKEFILE)
        write_config(tmp_path, {"source": "llm", "llm": llm})
        snakemake(tmp_path, PROMPTS, env=env)
        assert len(server.requests) == 2
        assert json.loads((tmp_path / PROMPTS).read_text())["provenance"]["model"] == "m1"
        snakemake(tmp_path, "--forcerun", "prompts", PROMPTS, env=env)
        assert len(server.requests) == 2  # cached: no request
        write_config(tmp_path, {"source": "llm", "llm": {**llm, "model": "m2"}})
        assert "Params have changed" in snakemake(tmp_path, "-n", PROMPTS, env=env)
        snakemake(tmp_path, PROMPTS, env=env)
        assert len(server.requests) == 4
        assert server.headers[-1]["authorization"] == f"Bearer {key}"
    finally:
        server.close()
    for path in [p for p in tmp_path.rglob("*") if p.is_file()]:  # outputs, logs, .snakemake metadata
        assert key not in path.read_text(errors="replace"), f"API key leaked into {path}"
