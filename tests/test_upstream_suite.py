"""llama.cpp's own server tests, run against the pinned llama-server and llamatwist (scripts/upstream_suite.py):
every test of these files that passes on llama-server passes here, but for the differences kept on purpose
(the script's KNOWN). The whole suite is the script's (about half an hour); these files cover the response
forms, telemetry and metrics it found differing."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.conftest import free_port
from tests.models import _script

FILES = ["unit/test_basic.py", "unit/test_tokenize.py", "unit/test_metrics.py", "unit/test_chat_completion.py",
         "unit/test_compat_oai_responses.py"]


def test_llama_cpps_server_tests_pass_here_where_they_pass_on_llama_server(llama_server: list[str],
                                                                           tmp_path: Path) -> None:
    suite = _script("upstream_suite")
    models = suite.local_models()
    reference = suite.run_suite(llama_server, FILES, tmp_path / "llama-server", free_port(), models, timeout=1200)
    # the stand-in models still let most of these tests run: a suite that did not start fails here
    assert sum(o.passed for o in reference.values()) >= 40, reference
    passing = suite.passing_ids(reference)  # llamatwist runs only these (the script's --passing-only)
    ours = suite.run_suite([sys.executable, "-m", "llamatwist"], passing, tmp_path / "llamatwist", free_port(), models,
                           timeout=1200)
    unknown = suite.differences(reference, ours)[0]
    assert not unknown, {t: ours.get(t) for t in unknown}
    assert len(ours) == len(passing)  # each id named a test that ran
