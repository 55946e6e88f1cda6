"""Synthetic speculative acceptance (--spec-synth-len / --spec-synth-rates, llama-server's benchmarking aid):
draft tokens are taken at random with the configured per-position rates instead of by match with the target,
so a speculative setup can be measured at a chosen acceptance. Checked here: the rates (a length resolves to a
geometric series with that mean acceptance length), llama-server's start-up errors, and a real server that
takes every draft at rate 1 and none at rate 0, reproducibly for a seed."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from llamatwist.cli import parse_config
from llamatwist.cli.errors import ConfigError
from llamatwist.cli.startup import synthetic_acceptance
from llamatwist.sampling_defaults import SpecParams, synthetic_rates
from tests.conftest import Server

PROMPT = "Once upon a time"


@pytest.mark.parametrize(("length", "n_max"), [(1.5, 3), (2.5, 4), (3.0, 16), (7.9, 8)])
def test_a_length_is_a_geometric_series_with_that_mean(length: float, n_max: int) -> None:
    rates = synthetic_rates(length, (), n_max)
    assert len(rates) == n_max
    assert math.isclose(1 + sum(rates), length, abs_tol=1e-6)
    p = rates[0]
    assert all(math.isclose(r, p ** (i + 1)) for i, r in enumerate(rates))
    # each position, once the earlier ones were taken, is taken with the same probability
    spec = SpecParams(type="ngram-simple", synth_rates=rates)
    assert all(math.isclose(c, p) for c in spec.synth_probs)


def test_the_ends_of_the_range_and_given_rates() -> None:
    assert synthetic_rates(1.0, (), 4) == (0.0, 0.0, 0.0, 0.0)
    assert synthetic_rates(5.0, (), 4) == (1.0, 1.0, 1.0, 1.0)
    assert synthetic_rates(None, (), 4) == ()
    assert synthetic_rates(None, (0.9, 0.45, 0.0), 3) == (0.9, 0.45, 0.0)
    assert SpecParams(synth_rates=(0.9, 0.45, 0.0)).synth_probs == (0.9, 0.5, 0.0)


@pytest.mark.parametrize(("length", "rates", "n_max", "message"), [
    (2.0, (1.0,), 1, "synthetic acceptance length and rates are mutually exclusive"),
    (2.0, (), 0, "synthetic acceptance requires at least one speculative token"),
    (None, (1.0,), 3, "synthetic acceptance rates must contain 3 values, got 1"),
    (None, (1.0, 1.5), 2, "synthetic acceptance rates must be finite and within [0, 1]"),
    (None, (0.5, 0.6), 2, "synthetic acceptance rates must be monotonically non-increasing"),
    (0.5, (), 3, "synthetic acceptance length must be finite and within [1, 4]"),
    (9.0, (), 4, "synthetic acceptance length must be finite and within [1, 5]"),
])  # fmt: skip
def test_bad_settings(length: float | None, rates: tuple[float, ...], n_max: int, message: str) -> None:
    with pytest.raises(ValueError) as err:
        synthetic_rates(length, rates, n_max)
    assert str(err.value) == message


def startup(*argv: str) -> Any:
    return synthetic_acceptance(parse_config(list(argv), {}))


def test_start_up_checks_use_the_draft_length_of_the_speculation() -> None:
    spec = startup("--spec-type", "ngram-map-k", "--spec-ngram-map-k-size-m", "2", "--spec-synth-rates", "1,0.25")
    assert spec.sampling.speculative.synth_rates == (1.0, 0.25)
    assert startup("--spec-type", "ngram-simple").sampling.speculative.synth_rates == ()  # off unless asked
    env = synthetic_acceptance(parse_config(["-md", "d.gguf", "--draft-max", "2"], {"LLAMA_ARG_SPEC_SYNTH_LEN": "3"}))
    assert env.sampling.speculative.synth_rates == (1.0, 1.0)
    with pytest.raises(ConfigError) as err:
        startup("--spec-synth-len", "2")
    assert (err.value.message, err.value.exit_code) == (
        "synthetic acceptance requires an initialized speculative decoding context", 1)
    with pytest.raises(ConfigError) as err:
        startup("-md", "d.gguf", "--draft-max", "3", "--spec-synth-rates", "1,1")
    assert err.value.message == ("failed to initialize speculative decoding context: synthetic acceptance rates "
                                 "must contain 3 values, got 2")
    with pytest.raises(ConfigError) as err:
        parse_config(["--spec-synth-rates", "1,x"], {})
    assert "--spec-synth-rates" in err.value.message


def per_position(srv: Server) -> list[int]:
    """llamacpp:spec_decode_num_accepted_tokens_per_pos_total, by position."""
    found = re.findall(r'^llamacpp:spec_decode_num_accepted_tokens_per_pos_total\{position="(\d+)"\} (\S+)$',
                       srv.get("/metrics").text, re.MULTILINE)
    return [int(float(n)) for _, n in sorted(found, key=lambda f: int(f[0]))]


def story(srv: Server, seed: int, **extra: Any) -> dict[str, Any]:
    r = srv.post("/completion", {"prompt": PROMPT, "n_predict": 64, "temperature": 1.5, "seed": seed, **extra})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_every_draft_taken_at_rate_one(make_server: Any, model_path: str) -> None:
    srv = make_server("-m", model_path, "-md", model_path, "--draft-max", "4", "--draft-p-min", "0", "-np", "2",
                      "-c", "2048", "-t", "2", "--spec-synth-rates", "1,1,1,1", "--metrics")
    first, again = story(srv, 5), story(srv, 5)
    t = first["timings"]
    # all taken, but where the token limit ended the last draft part-way
    assert t["draft_n"] >= 32 and t["draft_n"] - 4 < t["draft_n_accepted"] <= t["draft_n"], t
    assert (again["content"], again["timings"]["draft_n"]) == (first["content"], t["draft_n"])  # the seed decides
    # every position of every draft was taken (the drafts near the token limit are shorter)
    per_pos = per_position(srv)
    drafts = float(re.findall(r"^llamacpp:spec_decode_num_drafts_total (\S+)$", srv.get("/metrics").text,
                              re.MULTILINE)[0])
    assert len(per_pos) == 4 and per_pos[0] == drafts and sum(per_pos) == 2 * t["draft_n_accepted"], (per_pos,
                                                                                                      drafts)
    # a constraint still holds the target's own tokens: the server answers and keeps serving
    schema = srv.post("/completion", {"prompt": PROMPT, "n_predict": 16, "json_schema": {"type": "object"}})
    assert schema.status_code == 200, schema.text
    log = srv.log()
    assert "synthetic speculative acceptance is enabled for benchmarking; generated output is not valid" in log
    assert "synthetic acceptance: n_max = 4, mean length = 5.000000, rates = [1, 1, 1, 1]" in log
    assert srv.get("/health").status_code == 200


def test_no_draft_taken_at_rate_zero(make_server: Any, model_path: str) -> None:
    # the draft model is the target: real verification would take most of its drafts
    srv = make_server("-m", model_path, "-md", model_path, "--draft-max", "4", "--draft-p-min", "0", "-np", "1",
                      "-c", "2048", "-t", "2", "--spec-synth-len", "1", "--metrics")
    t = story(srv, 7, temperature=0)["timings"]
    assert t["draft_n"] >= 64 and t["draft_n_accepted"] == 0, t
    assert per_position(srv) == [0, 0, 0, 0]
    assert "draft acceptance = 0.00000 (    0 accepted /   " in srv.log()


def test_bad_settings_stop_the_start_up(make_server: Any, model_path: str) -> None:
    srv = make_server("-m", model_path, "--spec-type", "ngram-simple", "--spec-synth-len", "99", wait=False)
    assert srv.proc.wait(60) == 1
    assert ("error: failed to initialize speculative decoding context: synthetic acceptance length must be finite "
            "and within [1, 49]") in srv.log()
