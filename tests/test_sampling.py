"""The full sampler chain: request parsing (pure), the libllama chain against
the real model (in process), and the fields through a real server."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from llamatwist.api.errors import InvalidRequest
from llamatwist.api.params import generation_params
from llamatwist.config import SamplingDefaults
from llamatwist.engine.batch import Batch
from llamatwist.engine.context import Context, ContextParams
from llamatwist.engine.model import Model
from llamatwist.engine.sampling import Sampler, eog_tokens
from llamatwist.sampling_defaults import (
    DEFAULT_SAMPLERS,
    RANDOM_SEED,
    SamplerSettings,
    samplers_from_chars,
    samplers_from_names,
    samplers_to_chars,
)

D = SamplingDefaults()


def settings(**body: Any) -> SamplerSettings:
    return generation_params(body, D).sampler


# --------------------------------------------------------------------------
# Parsing (pure)


def test_defaults_are_llama_servers() -> None:
    s = settings()
    assert s == SamplerSettings(samplers=DEFAULT_SAMPLERS)
    assert s.samplers == ("penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature")
    assert samplers_to_chars(s.samplers) == "edskypmxt"
    assert (s.temperature, s.top_k, s.top_p, s.min_p, s.typical_p, s.min_keep) == (0.8, 40, 0.95, 0.05, 1.0, 0)
    assert (s.top_n_sigma, s.xtc_probability, s.xtc_threshold) == (-1.0, 0.0, 0.1)
    assert (s.dynatemp_range, s.dynatemp_exponent) == (0.0, 1.0)
    assert (s.repeat_last_n, s.repeat_penalty, s.presence_penalty, s.frequency_penalty) == (64, 1.0, 0.0, 0.0)
    assert (s.dry_multiplier, s.dry_base, s.dry_allowed_length, s.dry_penalty_last_n) == (0.0, 1.75, 2, 64)
    assert s.dry_sequence_breakers == ("\n", ":", '"', "*")
    assert (s.mirostat, s.mirostat_tau, s.mirostat_eta) == (0, 5.0, 0.1)
    assert (s.seed, s.ignore_eos, s.logit_bias, s.post_sampling_probs) == (RANDOM_SEED, False, (), False)


def test_every_field() -> None:
    s = settings(
        temperature=0.5, dynatemp_range=0.2, dynatemp_exponent=1.5, top_k=7, top_p=0.9, min_p=0.1,
        top_n_sigma=2.0, xtc_probability=0.3, xtc_threshold=0.2, typical_p=0.8, repeat_last_n=16,
        repeat_penalty=1.1, presence_penalty=0.5, frequency_penalty=0.25, dry_multiplier=0.8, dry_base=2.0,
        dry_allowed_length=3, dry_penalty_last_n=32, dry_sequence_breakers=["\n", "|"], mirostat=2,
        mirostat_tau=4.0, mirostat_eta=0.2, adaptive_target=0.5, adaptive_decay=0.5, min_keep=2, seed=7,
        ignore_eos=True, post_sampling_probs=True, samplers=["top_k", "temperature"],
    )
    assert s == SamplerSettings(
        seed=7, temperature=0.5, dynatemp_range=0.2, dynatemp_exponent=1.5, top_k=7, top_p=0.9, min_p=0.1,
        top_n_sigma=2.0, xtc_probability=0.3, xtc_threshold=0.2, typical_p=0.8, repeat_last_n=16,
        repeat_penalty=1.1, presence_penalty=0.5, frequency_penalty=0.25, dry_multiplier=0.8, dry_base=2.0,
        dry_allowed_length=3, dry_penalty_last_n=32, dry_sequence_breakers=("\n", "|"), mirostat=2,
        mirostat_tau=4.0, mirostat_eta=0.2, adaptive_target=0.5, adaptive_decay=0.5, min_keep=2,
        ignore_eos=True, samplers=("top_k", "temperature"), post_sampling_probs=True,
    )


def test_server_defaults_apply_and_requests_override() -> None:
    d = SamplingDefaults(mirostat=1, ignore_eos=True, logit_bias=((5, 1.0),), samplers=("top_k",), dry_base=3.0)
    s = generation_params({}, d).sampler
    assert (s.mirostat, s.ignore_eos, s.logit_bias, s.samplers) == (1, True, ((5, 1.0),), ("top_k",))
    s = generation_params({"mirostat": 0, "ignore_eos": False, "logit_bias": [], "samplers": "t"}, d).sampler
    assert (s.mirostat, s.ignore_eos, s.logit_bias, s.samplers) == (0, False, (), ("temperature",))
    # dry_base < 1 falls back to the server's default, as llama-server
    assert generation_params({"dry_base": 0.5}, d).sampler.dry_base == 3.0


def test_samplers_forms() -> None:
    assert settings(samplers="edskypmxt").samplers == DEFAULT_SAMPLERS
    assert settings(samplers="kz?t").samplers == ("top_k", "temperature")  # unknown characters dropped
    assert settings(samplers=["Top-K", "nucleus", "typ", "temp", "minp", "top_n_sigma", "bogus"]).samplers == (
        "top_k", "top_p", "typ_p", "temperature", "min_p", "top_n_sigma",
    )
    assert settings(samplers=[]).samplers == ()
    assert samplers_from_names(["xtc", "DRY", "penalties", "infill", "adaptive-p"]) == (
        "xtc", "dry", "penalties", "infill", "adaptive_p",
    )
    assert samplers_from_chars("ia") == ("infill", "adaptive_p")


def test_logit_bias_forms() -> None:
    assert settings(logit_bias=[[15043, 1], [2, False], ["Hello", -2.5]]).logit_bias == (
        (15043, 1.0), (2, -math.inf), ("Hello", -2.5),
    )
    # the OpenAI map: keys are token ids as strings, or texts
    assert settings(logit_bias={"15043": -100, "world": 3, "7": False}).logit_bias == (
        (15043, -100.0), ("world", 3.0), (7, -math.inf),
    )
    assert settings(logit_bias={}).logit_bias == ()


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("temperature", -1.0, 0.0),
    ("top_k", -5, 0),
    ("top_p", 1.5, 1.0),
    ("top_p", -0.5, 0.0),
    ("min_p", 2.0, 1.0),
    ("xtc_probability", 3.0, 1.0),
    ("xtc_threshold", -1.0, 0.0),
    ("mirostat", 5, 2),
    ("mirostat", -1, 0),
    ("adaptive_target", 3.0, 1.0),
])
def test_clamped_like_llama_server(field: str, value: Any, expected: Any) -> None:
    assert getattr(settings(**{field: value}), field) == expected


@pytest.mark.parametrize(("body", "field"), [
    ({"repeat_last_n": -1}, "repeat_last_n"),
    ({"repeat_penalty": 0}, "repeat_penalty"),
    ({"dry_allowed_length": -1}, "dry_allowed_length"),
    ({"dry_penalty_last_n": -1}, "dry_penalty_last_n"),
    ({"min_keep": -1}, "min_keep"),
    ({"adaptive_decay": 1.0}, "adaptive_decay"),
    ({"dry_sequence_breakers": []}, "dry_sequence_breakers"),
    ({"dry_sequence_breakers": "\n"}, "dry_sequence_breakers"),
    ({"dry_sequence_breakers": [1]}, "dry_sequence_breakers"),
    ({"samplers": 5}, "samplers"),
    ({"samplers": ["top_k", 1]}, "samplers"),
    ({"logit_bias": 5}, "logit_bias"),
    ({"logit_bias": [[1, 2, 3]]}, "logit_bias"),
    ({"logit_bias": [[1, "x"]]}, "logit_bias"),
    ({"logit_bias": [[1.5, 1]]}, "logit_bias"),
    ({"logit_bias": {"1": True}}, "logit_bias"),
    ({"mirostat": "2"}, "mirostat"),
    ({"mirostat_tau": "x"}, "mirostat_tau"),
    ({"top_n_sigma": [1]}, "top_n_sigma"),
    ({"dynatemp_range": True}, "dynatemp_range"),
    ({"post_sampling_probs": 1}, "post_sampling_probs"),
    ({"ignore_eos": "yes"}, "ignore_eos"),
])
def test_refused_with_400_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        generation_params(body, D)
    assert field in exc.value.message


def test_seed() -> None:
    assert settings(seed=-1).seed == RANDOM_SEED
    assert settings(seed=42).seed == 42
    assert generation_params({}, SamplingDefaults(seed=9)).sampler.seed == 9


# --------------------------------------------------------------------------
# The chain against the real model


@pytest.fixture(scope="module")
def model(model_path: str) -> Model:
    return Model(model_path)


@pytest.fixture(scope="module")
def ctx(model: Model) -> Context:
    return Context(model, ContextParams(n_ctx=512, n_seq_max=1, n_threads=2, n_threads_batch=2))


def _prompt(model: Model, ctx: Context, text: str = "Once upon a time, there was a") -> tuple[list[int], int]:
    ctx.seq_rm(0, -1, -1)
    tokens = model.vocab.tokenize(text, add_special=True)
    b = Batch(512)
    idx = b.add_sequence(tokens, 0, 0, True)
    ctx.decode(b)
    return tokens, idx


def generate(model: Model, ctx: Context, s: SamplerSettings, n: int = 12, text: str | None = None) -> list[int]:
    tokens, idx = _prompt(model, ctx, *(() if text is None else (text,)))
    sampler = Sampler(model, s)
    out: list[int] = []
    pos = len(tokens)
    for _ in range(n):
        t = sampler.sample(ctx, idx)
        out.append(t)
        b = Batch(1)
        idx = b.add_sequence([t], pos, 0, True)
        pos += 1
        ctx.decode(b)
    return out


def test_chain_follows_samplers_order(model: Model) -> None:
    names = Sampler(model, SamplerSettings()).names()
    assert [n.lstrip("?") for n in names] == [
        "penalties", "dry", "top-n-sigma", "top-k", "typical", "top-p", "min-p", "xtc", "temp-ext", "dist",
    ]
    names = Sampler(model, SamplerSettings(samplers=samplers_from_chars("tmk"))).names()
    assert [n.lstrip("?") for n in names] == ["temp-ext", "min-p", "top-k", "dist"]
    assert Sampler(model, SamplerSettings(samplers=())).names() == ["dist"]
    # adaptive-p selects the token itself: it replaces dist, at the end
    names = Sampler(model, SamplerSettings(samplers=("adaptive_p", "top_k"), adaptive_target=0.5)).names()
    assert names[-2:] == ["top-k", "adaptive-p"]
    # mirostat ignores the order: temperature, then mirostat
    assert Sampler(model, SamplerSettings(mirostat=1)).names() == ["temp", "mirostat"]
    assert Sampler(model, SamplerSettings(mirostat=2)).names() == ["temp", "mirostat-v2"]
    # biases (and ignore_eos) come first
    assert Sampler(model, SamplerSettings(ignore_eos=True, samplers=())).names() == ["logit-bias", "dist"]


def test_greedy_at_temperature_zero_is_argmax(model: Model, ctx: Context) -> None:
    _, idx = _prompt(model, ctx)
    argmax = int(ctx.logits(idx).argmax())
    for temp in (0.0, -1.0):
        s = Sampler(model, SamplerSettings(temperature=temp, seed=1))
        assert s.sample(ctx, idx) == argmax


def test_logit_bias_forces_and_bans(model: Model, ctx: Context) -> None:
    _, idx = _prompt(model, ctx)
    argmax = int(ctx.logits(idx).argmax())
    forced = Sampler(model, SamplerSettings(temperature=0, logit_bias=((42, math.inf),)))
    assert forced.sample(ctx, idx) == 42
    banned = Sampler(model, SamplerSettings(temperature=0, logit_bias=((argmax, -math.inf),)))
    assert banned.sample(ctx, idx) != argmax
    # a text biases the tokens of its tokenization; ids outside the vocabulary are dropped
    hello = model.vocab.tokenize(" Hello", add_special=False)
    text = Sampler(model, SamplerSettings(temperature=0, logit_bias=((" Hello", 1000.0), (10**9, 5.0), (-3, 1.0))))
    assert text.logit_bias == [(t, 1000.0) for t in hello]
    assert text.sample(ctx, idx) in hello


def test_ignore_eos_bans_every_eog_token(model: Model, ctx: Context) -> None:
    eog = eog_tokens(model)
    assert model.vocab.eos in eog and all(model.vocab.is_eog(t) for t in eog)
    _, idx = _prompt(model, ctx)
    logits = ctx.logits(idx).copy()
    logits[list(eog)] += 1000.0  # make an end-of-generation token the obvious pick
    s = Sampler(model, SamplerSettings(temperature=0, ignore_eos=True))
    token, _, _ = s.sample_logits(logits, 0)
    assert token not in eog
    token, _, _ = Sampler(model, SamplerSettings(temperature=0)).sample_logits(logits, 0)
    assert token in eog


def test_fixed_seed_reproduces(model: Model, ctx: Context) -> None:
    s = SamplerSettings(temperature=1.0, seed=1234, top_k=0, top_p=1.0, min_p=0.0)
    first = generate(model, ctx, s)
    assert generate(model, ctx, s) == first
    assert Sampler(model, s).seed == 1234
    others = {tuple(generate(model, ctx, SamplerSettings(temperature=1.0, seed=k, top_k=0, top_p=1.0, min_p=0.0)))
              for k in range(4)}
    assert len(others) > 1


def test_random_seed_is_reported(model: Model) -> None:
    seeds = {Sampler(model, SamplerSettings()).seed for _ in range(3)}
    assert RANDOM_SEED not in seeds and len(seeds) > 1


@pytest.mark.parametrize("s", [
    SamplerSettings(mirostat=1, seed=3),
    SamplerSettings(mirostat=2, seed=3, mirostat_tau=3.0, mirostat_eta=0.2),
    SamplerSettings(dry_multiplier=0.8, dry_allowed_length=1, dry_sequence_breakers=("\n",), seed=3),
    SamplerSettings(xtc_probability=1.0, xtc_threshold=0.05, seed=3),
    SamplerSettings(top_n_sigma=1.0, seed=3),
    SamplerSettings(dynatemp_range=0.5, dynatemp_exponent=2.0, seed=3),
    SamplerSettings(typical_p=0.5, min_keep=3, seed=3),
    SamplerSettings(repeat_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.5, seed=3),
    SamplerSettings(samplers=("adaptive_p",), adaptive_target=0.3, seed=3),
    # infill compares candidates pairwise: behind top-k, as it is meant to be used (alone it takes minutes)
    SamplerSettings(samplers=("top_k", "infill", "temperature"), seed=3),
    SamplerSettings(samplers=(), seed=3),
    SamplerSettings(top_k=1, top_p=0.0, min_p=1.0, typical_p=0.0, min_keep=10**6, seed=3),
], ids=lambda s: ",".join(f"{k}={v}" for k, v in vars(s).items() if v != getattr(SamplerSettings(), k)))
def test_every_sampler_produces_valid_tokens(model: Model, ctx: Context, s: SamplerSettings) -> None:
    out = generate(model, ctx, s, n=8)
    assert all(model.vocab.is_valid(t) for t in out)
    assert generate(model, ctx, s, n=8) == out  # seeded: reproducible too


def test_dry_and_penalties_change_a_repetitive_continuation(model: Model, ctx: Context) -> None:
    text = "one two one two one two one two one two one two"
    plain = generate(model, ctx, SamplerSettings(temperature=0), n=6, text=text)
    dry = generate(model, ctx, SamplerSettings(temperature=0, dry_multiplier=5.0, dry_allowed_length=1), n=6, text=text)
    assert plain != dry


def test_post_sampling_probs(model: Model, ctx: Context) -> None:
    _, idx = _prompt(model, ctx)
    logits = ctx.logits(idx)
    s = Sampler(model, SamplerSettings(seed=5, top_k=5))
    token, p, top = s.sample_probs(ctx, idx, 10)
    assert 1 <= len(top) <= 5  # top_k cut the rest
    assert top[0][0] == int(logits.argmax())
    probs = [q for _, q in top]
    assert probs == sorted(probs, reverse=True) and all(q > 0 for q in probs)
    assert math.isclose(sum(probs), 1.0, rel_tol=1e-4)
    assert (token, p) in top
    greedy = Sampler(model, SamplerSettings(temperature=0)).sample_probs(ctx, idx, 3)
    assert greedy == (int(logits.argmax()), 1.0, [(int(logits.argmax()), 1.0)])
    # the same seed gives the same token through either path
    a = Sampler(model, SamplerSettings(seed=11, temperature=1.5)).sample(ctx, idx)
    b = Sampler(model, SamplerSettings(seed=11, temperature=1.5)).sample_probs(ctx, idx, 0)[0]
    assert a == b


def test_post_sampling_probs_accepts_into_the_chain(model: Model) -> None:
    """sample_logits accepts its token: the penalties see it next time."""
    logits = np.zeros(model.vocab.n_tokens, dtype=np.float32)
    logits[[10, 11]] = 5.0
    logits[10] += 0.01
    s = Sampler(model, SamplerSettings(temperature=0, repeat_penalty=2.0, samplers=("penalties", "temperature")))
    assert s.sample_logits(logits, 2)[0] == 10
    assert s.sample_logits(logits, 2)[0] == 11


def test_bad_penalty_refused(model: Model) -> None:
    with pytest.raises(ValueError, match="penalty_repeat"):
        Sampler(model, SamplerSettings(repeat_penalty=0.0))


# --------------------------------------------------------------------------
# Through the server


@pytest.fixture(scope="module")
def srv(server: Any) -> Iterator[Any]:
    yield server


NEW_FIELDS: dict[str, Any] = {
    "dynatemp_range": 0.25, "dynatemp_exponent": 1.5, "top_n_sigma": 2.5, "xtc_probability": 0.25,
    "xtc_threshold": 0.2, "typical_p": 0.9, "dry_multiplier": 0.5, "dry_base": 2.0, "dry_allowed_length": 3,
    "dry_penalty_last_n": 32, "dry_sequence_breakers": ["\n", "|"], "mirostat": 0, "mirostat_tau": 4.0,
    "mirostat_eta": 0.25, "min_keep": 1, "post_sampling_probs": True, "ignore_eos": True, "repeat_last_n": 16,
}


def test_completion_echoes_the_new_fields(srv: Any) -> None:
    body = {"prompt": "Hello", "n_predict": 4, "seed": 99, "samplers": "kpmt",
            "logit_bias": [[15043, 1.5], [2, False]], **NEW_FIELDS}
    r = srv.post("/completion", json=body)
    assert r.status_code == 200, r.text
    gs = r.json()["generation_settings"]
    for key, value in NEW_FIELDS.items():
        assert gs[key] == value, key
    assert gs["samplers"] == ["top_k", "top_p", "min_p", "temperature"]
    # the request's biases, then the bans ignore_eos adds for every end-of-generation token (llama-server)
    assert gs["logit_bias"][:2] == [{"bias": 1.5, "token": 15043}, {"bias": None, "token": 2}]
    assert len(gs["logit_bias"]) > 2 and all(b["bias"] is None for b in gs["logit_bias"][2:])
    assert gs["seed"] == 99
    assert r.json()["tokens_predicted"] == 4  # ignore_eos


def test_completion_clamps_like_llama_server(srv: Any) -> None:
    r = srv.post("/completion", json={"prompt": "Hi", "n_predict": 1, "top_p": 7, "mirostat": 9,
                                      "temperature": -2, "dry_base": 0.2})
    assert r.status_code == 200, r.text
    gs = r.json()["generation_settings"]
    assert (gs["top_p"], gs["mirostat"], gs["temperature"], gs["dry_base"]) == (1.0, 2, 0.0, 1.75)


def test_fixed_seed_reproduces_through_the_server(srv: Any) -> None:
    body = {"prompt": "The weather today is", "n_predict": 12, "seed": 4242, "temperature": 1.0,
            "cache_prompt": False}
    first = srv.post("/completion", json=body).json()["content"]
    assert srv.post("/completion", json=body).json()["content"] == first


def test_mirostat_and_dry_through_the_server(srv: Any) -> None:
    for extra in ({"mirostat": 1}, {"mirostat": 2}, {"dry_multiplier": 0.8, "xtc_probability": 0.5,
                                                     "top_n_sigma": 1.0, "samplers": ["dry", "xtc", "top_n_sigma",
                                                                                      "temperature"]}):
        r = srv.post("/completion", json={"prompt": "Hi", "n_predict": 4, **extra})
        assert r.status_code == 200, (extra, r.text)
        assert r.json()["tokens_predicted"] >= 1


@pytest.mark.parametrize("bad", [
    {"repeat_last_n": -1}, {"dry_allowed_length": -2}, {"dry_sequence_breakers": []}, {"samplers": 3},
    {"logit_bias": "x"}, {"repeat_penalty": 0}, {"mirostat": "1"}, {"adaptive_decay": 2},
])
def test_bad_values_are_400_and_the_server_keeps_serving(srv: Any, bad: dict[str, Any]) -> None:
    for path, base in (("/completion", {"prompt": "Hi"}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]})):
        r = srv.post(path, json={**base, "max_tokens": 2, **bad})
        assert r.status_code == 400, (path, bad, r.text)
        assert next(iter(bad)) in r.json()["error"]["message"]
    assert srv.post("/completion", json={"prompt": "Hi", "n_predict": 2}).status_code == 200


def test_chat_takes_the_new_fields(srv: Any) -> None:
    body = {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4, "seed": 5,
            "logit_bias": {"15043": 2}, "samplers": ["top_k", "temperature"], "cache_prompt": False, **NEW_FIELDS}
    r = srv.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] is not None
    again = srv.post("/v1/chat/completions", json=body)
    assert again.json()["choices"][0]["message"]["content"] == r.json()["choices"][0]["message"]["content"]


def test_cli_sampling_defaults_reach_requests(make_server: Any, model_path: str) -> None:
    s = make_server("-m", model_path, "-np", "1", "-c", "512", "-t", "2", "--samplers", "top_k;temperature",
                    "--mirostat", "2", "--mirostat-ent", "3", "--ignore-eos", "-l", "15043+1", "--dry-base", "2.5",
                    "--dry-sequence-breaker", "|", "--top-n-sigma", "1.5", "--xtc-probability", "0.1")
    props = s.get("/props").json()["default_generation_settings"]["params"]
    assert props["samplers"] == ["top_k", "temperature"]
    assert (props["mirostat"], props["mirostat_tau"], props["ignore_eos"]) == (2, 3.0, True)
    assert props["logit_bias"][0] == {"bias": 1.0, "token": 15043}  # then ignore_eos's end-of-generation bans
    assert len(props["logit_bias"]) > 1 and all(b["bias"] is None for b in props["logit_bias"][1:])
    assert (props["dry_base"], props["dry_sequence_breakers"]) == (2.5, ["|"])
    assert (props["top_n_sigma"], props["xtc_probability"]) == (1.5, 0.1)
    r = s.post("/completion", json={"prompt": "Hi", "n_predict": 3})
    assert r.status_code == 200 and r.json()["tokens_predicted"] == 3
    assert r.json()["generation_settings"]["samplers"] == ["top_k", "temperature"]


def test_post_sampling_probs_through_the_server(srv: Any) -> None:
    body = srv.post("/completion", {"prompt": "The capital of France is", "n_predict": 3, "n_probs": 4,
                                    "top_k": 2, "temperature": 1.0, "seed": 1, "post_sampling_probs": True}).json()
    probs = body["completion_probabilities"]
    assert len(probs) == 3
    for entry in probs:
        assert "prob" in entry and "top_probs" in entry and "logprob" not in entry
        tops = entry["top_probs"]
        assert 1 <= len(tops) <= 2  # top_k 2 cut the rest after the chain
        assert abs(sum(t["prob"] for t in tops) - 1.0) < 1e-3
        assert entry["id"] in [t["id"] for t in tops]


def test_a_forced_token_is_what_the_chain_records(model: Model) -> None:
    """Synthetic acceptance (--spec-synth-*) takes a draft token instead of the one drawn: the penalties then
    count the draft token, as llama-server's sampler accepts it (common_sampler_accept(draft[i]))."""
    import numpy as np

    logits = np.zeros(model.vocab.n_tokens, dtype=np.float32)
    logits[[10, 11, 12]] = [5.0, 4.0, 3.0]
    settings_ = SamplerSettings(temperature=0, repeat_penalty=100.0, repeat_last_n=8)
    plain, forced = Sampler(model, settings_), Sampler(model, settings_)
    assert plain.sample_logits(logits.copy(), 0) == (10, 1.0, [])
    token, p, _ = forced.sample_logits(logits.copy(), 0, forced=11)
    assert (token, p) == (11, 0.0)  # greedy's distribution holds its pick only: the forced token had none
    # the next draw: the penalized token is the one each chain accepted
    assert plain.sample_logits(logits.copy(), 0)[0] == 11
    assert forced.sample_logits(logits.copy(), 0)[0] == 10
