#!/usr/bin/env python3
"""llama.cpp's own server tests (``tools/server/tests`` of the pinned source) against llama-server and llamatwist.

The suite starts its server (``LLAMA_SERVER_BIN_PATH``) with llama-server's flags and speaks to it over HTTP, so
it runs unchanged against ``python -m llamatwist``. Its models come from Hugging Face; here each preset gets a
local stand-in (the default model, the project's generated BERT, reranker and FIM models), so a test that checks
what one particular model writes fails on both servers. What counts is the difference: a test that passes on
llama-server, built from the same source, and fails on llamatwist is behaviour llamatwist does not match.
`KNOWN` lists those kept on purpose, with why (README: "Where llamatwist differs on purpose").

    python scripts/upstream_suite.py                       # every test file (about half an hour on 2 cores)
    python scripts/upstream_suite.py unit/test_metrics.py  # some files
    python scripts/upstream_suite.py --passing-only        # llamatwist runs only what passes on llama-server

Prints, per server, passed/failed counts, then the tests that pass only on llama-server (known ones apart) and
those that pass only here; exits 1 when an unknown difference is found. Needs the package installed with its
test extras, and builds the reference llama-server once (in the native cache) when it is not there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "third_party" / "llama.cpp"

# Tests that pass on llama-server and fail here on purpose (test id prefix: why).
KNOWN: dict[str, str] = {
    "unit.test_security::test_cors_options[": "CORS: '*' is sent as '*' and credentials are granted only to "
    "origins named with --cors-origins; llama-server echoes any Origin with credentials (issue 19)",
    "unit.test_compat_anthropic::test_anthropic_empty_messages": "an empty messages list is a 400",
    "unit.test_compat_anthropic::test_anthropic_tool_result_with_image": "media without --mmproj is the "
    "client's mistake: 400, not llama-server's 500",
    "unit.test_compat_anthropic::test_anthropic_vision_format_accepted": "the same: 400, not 500",
    "unit.test_tools_builtin::test_tools_builtin_runtime_header_": "a bad X-Tools-Runtime header is a 400, "
    "not llama-server's 500",
    "unit.test_compat_oai_responses::test_responses_stream_with_llama_telemetry": "a reply cut by "
    "max_output_tokens ends with response.incomplete, as OpenAI's; llama-server sends response.completed",
    "unit.test_kv_keep_only_active::": "reads llama-server's debug log lines (__TEST_TAG_...), which belong to "
    "its slot cache; llamatwist's shared prefix cache keeps idle slots' prefixes its own way",
    "unit.test_sleep::test_server_sleep_token_counting_wake": "counting tokens does not wake a sleeping "
    "server: a vocabulary-only copy of the model answers it",
    "unit.test_sleep::test_server_sleep_metrics_buckets": "the same: /tokenize does not wake it",
    "unit.test_completion::test_completion_unified[256-4-n_predict_vals2-": "an overflowed unified KV pool: "
    "llama-server fails every request with a 500, llamatwist stops the youngest generation until there is room and "
    "finishes all (greedy output as with room to spare); the stand-in model then samples end-of-text one token early",
    "unit.test_router::": "with no model, llamatwist serves its default model; llama-server is a router over its "
    "cache (llamatwist's router: --models-dir/--models-preset)",
}

# pytest plugin: each preset's Hugging Face model replaced by a local file, and no downloads
_PLUGIN = '''
import json, os, sys, types
sys.modules.setdefault("wget", types.ModuleType("wget"))  # utils.py imports it for downloads only
import utils

_MODELS = json.loads(os.environ["UPSTREAM_SUITE_MODELS"])
_start = utils.ServerProcess.start


def _local_start(self, *args, **kwargs):
    if self.model_hf_repo:
        local = _MODELS.get(f"{self.model_hf_repo}:{self.model_hf_file or ''}")
        if local:
            self.model_file, self.model_hf_repo, self.model_hf_file = local, None, None
    return _start(self, *args, **kwargs)


utils.ServerProcess.start = _local_start
utils.ServerPreset.load_all = staticmethod(lambda: None)
'''


def local_models() -> dict[str, str]:
    """The suite's preset models (``repo:file``) and their local stand-ins, generated or fetched once."""
    sys.path.insert(0, str(REPO))
    from llamatwist.models import ensure_default_model
    from tests import models

    base = ensure_default_model()
    chat = str(base)
    return {
        "ggml-org/models:tinyllamas/stories260K.gguf": chat,
        "ggml-org/test-model-stories260K:": chat,
        "ggml-org/stories15M_MOE:stories15M_MOE-F16.gguf": chat,
        "ggml-org/test-model-stories260K-infill:": str(models.smollm2_fim_gguf(base)),
        "ggml-org/models:bert-bge-small/ggml-model-f16.gguf": str(models.minilm_gguf()),
        "ggml-org/models:jina-reranker-v1-tiny-en/ggml-model-f16.gguf": str(models.reranker_gguf()),
    }


def reference_server() -> str:
    sys.path.insert(0, str(REPO))
    from bench.vs_llama_server import reference_server as built

    return str(built())


@dataclass(frozen=True)
class Outcome:
    passed: bool
    message: str = ""


def run_suite(server: list[str], files: list[str], work: Path, port: int, models: dict[str, str],
              timeout: float = 3600) -> dict[str, Outcome]:
    """Run the suite's ``files`` against ``server`` (a command) in a copy of its tree under ``work``; the
    outcome of each test by id (``unit.test_x::test_y[...]``)."""
    root = work / "llama.cpp"
    shutil.rmtree(root, ignore_errors=True)
    (root / "tools" / "server").mkdir(parents=True)
    for shared in ("models", "tools/mtmd"):  # what the tests read by relative path
        (root / shared).symlink_to(SOURCE / shared)
    tests = root / "tools" / "server" / "tests"
    shutil.copytree(SOURCE / "tools" / "server" / "tests", tests)
    (work / "upstream_suite_plugin.py").write_text(_PLUGIN)
    launcher = work / "server"  # the suite runs one executable
    launcher.write_text("#!/bin/sh\nexec " + " ".join(f"'{a}'" for a in server) + ' "$@"\n')
    launcher.chmod(0o755)
    report = work / "junit.xml"
    env = {**os.environ, "LLAMA_SERVER_BIN_PATH": str(launcher), "PORT": str(port),
           "PYTHONPATH": os.pathsep.join((str(work), str(tests))), "UPSTREAM_SUITE_MODELS": json.dumps(models)}
    subprocess.run([sys.executable, "-m", "pytest", "-p", "upstream_suite_plugin", "-q", "-p", "no:cacheprovider",
                    "--timeout", "300", f"--junitxml={report}", *files], cwd=tests, env=env, timeout=timeout,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return read_junit(report)


def read_junit(path: Path) -> dict[str, Outcome]:
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        bad = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        out[name] = Outcome(bad is None, "" if bad is None else (bad.get("message") or bad.tag)[:300])
    return out


def known_reason(test: str) -> str | None:
    return next((why for prefix, why in KNOWN.items() if test.startswith(prefix)), None)


def passing_ids(results: dict[str, Outcome]) -> list[str]:
    """pytest node ids (``unit/test_x.py::test_y[...]``) of the tests that passed."""
    ids = []
    for test, outcome in results.items():
        module, _, name = test.partition("::")
        if outcome.passed:
            ids.append(f"{module.replace('.', '/')}.py::{name}")
    return ids


def differences(reference: dict[str, Outcome], ours: dict[str, Outcome]) -> tuple[list[str], list[str], list[str]]:
    """(passing only on llama-server and not known, known ones, passing only here)."""
    only_ref = [t for t, o in reference.items() if o.passed and not (t in ours and ours[t].passed)]
    unknown = [t for t in only_ref if known_reason(t) is None]
    known = [t for t in only_ref if known_reason(t) is not None]
    only_ours = [t for t, o in ours.items() if o.passed and not (t in reference and reference[t].passed)]
    return unknown, known, only_ours


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", default=["unit"], help="test files or directories (default: unit)")
    p.add_argument("--port", type=int, default=8480, help="the first of the two servers' ports")
    p.add_argument("--passing-only", action="store_true",
                   help="run llamatwist only on the tests that pass on llama-server (quicker; no 'pass only here')")
    args = p.parse_args(argv)
    if not (SOURCE / "tools" / "server" / "tests").is_dir():
        sys.exit("llama.cpp's source is not placed: run `python build_native.py` first")
    models = local_models()
    results = {}
    with tempfile.TemporaryDirectory(prefix="upstream-suite-") as tmp:
        for i, (name, cmd) in enumerate((("llama-server", [reference_server()]),
                                         ("llamatwist", [sys.executable, "-m", "llamatwist"]))):
            work = Path(tmp) / name
            work.mkdir()
            files = args.files
            if args.passing_only and results:
                files = passing_ids(results["llama-server"])
            results[name] = run_suite(cmd, files, work, args.port + 10 * i, models) if files else {}
            n_pass = sum(o.passed for o in results[name].values())
            print(f"{name}: {n_pass} passed, {len(results[name]) - n_pass} failed or skipped")
    unknown, known, only_ours = differences(results["llama-server"], results["llamatwist"])
    for title, tests in (("pass on llama-server, not here", unknown), ("differ on purpose", known),
                         ("pass only here", only_ours)):
        print(f"\n{title}: {len(tests)}")
        for t in tests:
            why = known_reason(t) if tests is known else results["llamatwist"].get(t, Outcome(False)).message
            print(f"  {t}" + (f"\n      {why}" if why else ""))
    return 1 if unknown else 0


if __name__ == "__main__":
    sys.exit(main())
