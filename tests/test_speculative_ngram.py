"""Speculative decoding's n-gram stores (issue 15): --spec-type ngram-mod, ngram-map-k, ngram-map-k4v and
ngram-cache with -lcs/-lcd files (also combined, and --spec-default), as llama.cpp's common/ngram-mod.cpp and ngram-map.cpp behave. Greedy output is
the same with each type on and off on the F32 model; drafts are made and accepted on a copying prompt; /props
shows the settings; bad values stop the start-up with exit status 2."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llamatwist.cli import ConfigError, parse_config
from llamatwist.runtime.ngram_cache import NgramCacheDrafter, draft_from_caches, load_cache, update_cache
from llamatwist.runtime.ngram_map import NgramMap
from llamatwist.runtime.ngram_mod import NgramMod, NgramModDrafter
from llamatwist.runtime.speculative import Drafters
from llamatwist.sampling_defaults import SpecParams
from tests.conftest import Server
from tests.models import smollm2_f32_gguf
from tests.test_speculative import EXACT, OFF, PASSAGE, REPEAT, STORY, complete, metric

TYPES = ("ngram-mod", "ngram-map-k", "ngram-map-k4v", "ngram-cache")


def _mod_index(ngram: list[int], size: int) -> int:
    h = 0
    for t in ngram:
        h = (h * 6364136223846793005 + t) % (1 << 64)  # size_t arithmetic, as llama.cpp's idx()
    return h % size


def test_ngram_mod_table_is_llama_cpps_hash() -> None:
    tokens = [(i * 7919) % 50000 for i in range(300)]
    mod = NgramMod(3, 1024)
    mod.add(tokens, 0, len(tokens) - 3)
    want: dict[int, int] = {}
    for i in range(len(tokens) - 3):
        want[_mod_index(tokens[i : i + 3], 1024)] = tokens[i + 3]  # the last n-gram of a hash wins
    assert mod.used == len(want)
    assert all(int(mod.entries[k]) == v for k, v in want.items())
    assert mod.get(tokens[10:13]) == want[_mod_index(tokens[10:13], 1024)]


def test_ngram_mod_drafts_chain_and_respect_n_min() -> None:
    cycle = list(range(100, 130))
    prompt = cycle * 3
    mod = NgramModDrafter(4, 2, 8, size=1 << 16)
    mod.begin(0, prompt)
    # the last 4 tokens (the sampled one last) recur: the chain follows the cycle, n_max tokens long
    assert mod.draft(0, prompt, 100) == list(range(101, 109))
    assert mod.draft(0, [1, 2, 3], 9) == []  # shorter than n_match
    strict = NgramModDrafter(4, 8, 8, size=1 << 16)
    strict.begin(0, [*cycle[:6], 7, 7])  # too little to chain 8 tokens: no draft at all
    assert strict.draft(0, cycle[:3], cycle[3]) == []


def test_ngram_mod_low_acceptance_clears_the_table() -> None:
    mod = NgramModDrafter(4, 1, 8, size=1 << 16)
    prompt = list(range(100, 130)) * 2
    mod.begin(0, prompt)
    for _ in range(5):  # 5 drafts in a row with less than a quarter accepted
        assert mod.draft(0, prompt, 100)
        mod.drafted(0, 8)
        mod.accept(0, 1)
    assert mod.mod.used == 0


def test_ngram_map_k_drafts_no_more_than_last_accepted() -> None:
    prompt = list(range(100, 130)) * 3
    history = [*prompt, 100, 101]
    k = NgramMap(3, 5, key_only=True, min_hits=1)
    k.begin(prompt)
    assert k.draft(history, 102) == [103, 104, 105, 106, 107]
    k.accept(2)
    assert k.draft(history, 102) == [103, 104]
    assert k.draft(history, 7) == []  # an n-gram never seen


def test_ngram_map_k4v_needs_hits_and_a_dominant_value() -> None:
    prompt = list(range(100, 130)) * 3
    history = [*prompt, 100, 101]
    k4v = NgramMap(3, 5, key_only=False, min_hits=2)
    k4v.begin(prompt)
    assert k4v.draft(history, 102) == []  # first hit of the key: below min_hits
    assert k4v.draft(history, 102) == [103, 104, 105, 106, 107]
    # the key followed by two different m-grams equally often: none stands out, no draft
    mixed = [1, 2, 3, 10, 11, 12, 13, 14, 1, 2, 3, 20, 21, 22, 23, 24, 9, 9, 9, 9, 9, 9]
    split = NgramMap(3, 5, key_only=False, min_hits=1)
    split.begin(mixed)
    assert split.draft([*mixed, 1, 2], 3) == []


def _write_cache(path: Path, cache: dict[tuple[int, ...], dict[int, int]]) -> None:
    """llama.cpp's common_ngram_cache_save format: 4 int32 n-gram (-1 pads), int32 count, (token, count) pairs."""
    out = bytearray()
    for ngram, counts in cache.items():
        out += struct.pack("<5i", *(*ngram, *[-1] * (4 - len(ngram))), len(counts))
        for token, count in counts.items():
            out += struct.pack("<2i", token, count)
    path.write_bytes(bytes(out))


def test_ngram_cache_files_and_drafts(tmp_path: Path) -> None:
    _write_cache(tmp_path / "static.bin", {(5, 6): {7: 3, 8: 1}, (6, 7): {9: 2}, (7, 9): {1: 1}})
    static = load_cache(str(tmp_path / "static.bin"))
    assert static[(5, 6, -1, -1)] == {7: 3, 8: 1}
    # the static cache alone: 7 (3 of 4), then 9 (2 of 2); (7, 9) has 1 sample, under the 2 the static 2-grams
    # need: the draft stops
    assert draft_from_caches([1, 5, 6], 8, {}, {}, static) == [7, 9]
    context: dict[Any, dict[int, int]] = {}
    update_cache(context, [10, 11, 12, 10, 11, 12, 10, 11], 8)
    assert context[(10, 11, -1, -1)] == {12: 2}
    assert draft_from_caches([10, 11, 12, 10, 11, 12, 10, 11], 3, context, {}, {}) == [12, 10, 11]
    drafter = NgramCacheDrafter(static, {})
    assert drafter.draft(0, [10, 11, 12, 10, 11, 12, 10], 11) == [12, 10, 11, 12, 10, 11, 12, 10]  # 8 at most
    (tmp_path / "bad.bin").write_bytes(b"\x00" * 12)  # shorter than a record
    with pytest.raises(ValueError, match="truncated"):
        load_cache(str(tmp_path / "bad.bin"))


def test_unreadable_lookup_cache_stops_the_server(make_server: Any, model_path: str, tmp_path: Path) -> None:
    srv = make_server("-m", model_path, "--spec-type", "ngram-cache", "-lcs", str(tmp_path / "missing.bin"),
                      wait=False)
    assert srv.proc.wait(60) == 1
    assert "failed to open static lookup cache" in srv.log() and "missing.bin" in srv.log()


def test_drafters_take_the_first_type_in_llama_cpps_order() -> None:
    prompt = list(range(100, 130)) * 3
    spec = SpecParams(type="ngram-mod,ngram-map-k", mod_n_match=4, mod_n_min=1, mod_n_max=8, map_k_size_n=3,
                      map_k_size_m=5)
    drafters = Drafters(None)
    task = object()
    # ngram-map-k comes before ngram-mod: its 5 tokens, not ngram-mod's 8
    assert drafters.draft(0, task, prompt, spec, prompt, 100, 16) == [101, 102, 103, 104, 105]
    drafters.accept(0, 0)  # goes to ngram-map-k: that key drafts nothing next time, ngram-mod does
    assert drafters.draft(0, task, prompt, spec, prompt, 100, 16) == list(range(101, 109))
    assert drafters.draft(0, task, prompt, spec, prompt, 100, 3) == [101, 102, 103]  # the step's limit


def test_types_and_spec_default_from_the_command_line() -> None:
    spec = parse_config(["--spec-type", "ngram-map-k4v,ngram-mod", "--spec-type", "ngram-simple"], {})
    assert spec.sampling.speculative.type == "ngram-map-k4v,ngram-mod,ngram-simple"  # repeated flags add up
    assert parse_config(["--spec-type", "none,ngram-mod"], {}).sampling.speculative.type == "none"
    default = parse_config(["--spec-default"], {}).sampling.speculative
    assert (default.type, default.mod_n_match, default.mod_n_min, default.mod_n_max) == ("ngram-mod", 24, 48, 64)
    both = parse_config(["--spec-default", "--spec-ngram-mod-n-min", "8"], {"LLAMA_ARG_SPEC_TYPE": "ngram-simple"})
    assert (both.sampling.speculative.type, both.sampling.speculative.mod_n_min) == ("ngram-simple,ngram-mod", 8)
    flags = parse_config(["--spec-ngram-map-k-size-n", "5", "--spec-ngram-map-k4v-min-hits", "3",
                          "--spec-draft-p-split", "0.2", "--no-spec-draft-backend-sampling"], {})
    assert (flags.sampling.speculative.map_k_size_n, flags.sampling.speculative.map_k4v_min_hits) == (5, 3)
    assert (flags.draft_p_split, flags.draft_backend_sampling) == (0.2, False)
    assert parse_config([], {"LLAMA_ARG_SPEC_DRAFT_BACKEND_SAMPLING": "0"}).draft_backend_sampling is False
    assert parse_config([], {}).draft_backend_sampling is True  # llama-server's default


@pytest.mark.parametrize("args, message", [
    (["--spec-type", "ngram-mod,bogus"], "unknown speculative type: 'bogus'"),
    (["--spec-ngram-mod-n-match", "0"], "must be between 1 and 1024"),
    (["--spec-ngram-mod-n-max", "1025"], "must be between 0 and 1024"),
    (["--spec-type", "ngram-mod", "--spec-ngram-mod-n-min", "9", "--spec-ngram-mod-n-max", "8"], "must not exceed"),
    (["--spec-ngram-map-k-size-m", "0"], "must be between 1 and 1024"),
    (["--spec-ngram-map-k4v-min-hits", "0"], "must be >= 1"),
    (["--spec-draft-p-split", "x"], "expected a number"),
])  # fmt: skip
def test_bad_values(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(args, {})
    assert info.value.exit_code == 2


def test_bad_value_stops_the_server(make_server: Any, model_path: str) -> None:
    srv = make_server("-m", model_path, "--spec-type", "ngram-mod", "--spec-ngram-mod-n-match", "0", wait=False)
    assert srv.proc.wait(60) == 2
    assert "--spec-ngram-mod-n-match" in srv.log() and "between 1 and 1024" in srv.log()


@pytest.fixture(scope="module")
def f32_model(model_path: str) -> str:
    return str(smollm2_f32_gguf(Path(model_path)))


@pytest.fixture(scope="module")
def ngrams(f32_model: str) -> Iterator[Server]:
    # small n-grams: the test passage is ~35 tokens (the defaults, 24 and 12, want longer text)
    srv = Server(["-m", f32_model, "-np", "2", "-c", "4096", "-t", "2", "--metrics", *EXACT,
                  "--spec-type", ",".join(TYPES), "--spec-ngram-mod-n-match", "8", "--spec-ngram-mod-n-min", "4",
                  "--spec-ngram-mod-n-max", "16", "--spec-ngram-map-k-size-n", "4", "--spec-ngram-map-k-size-m",
                  "16", "--spec-ngram-map-k4v-size-n", "4", "--spec-ngram-map-k4v-size-m", "16"])
    yield srv
    srv.stop()


@pytest.mark.parametrize("kind", [*TYPES, ",".join(TYPES)])
def test_output_is_unchanged_and_drafts_are_taken(ngrams: Server, kind: str) -> None:
    before = metric(ngrams, "spec_decode_num_draft_tokens_total")
    spec = complete(ngrams, REPEAT, n_probs=2, **{"speculative.type": kind})
    plain = complete(ngrams, REPEAT, n_probs=2, **OFF)
    assert spec["content"] == plain["content"] and PASSAGE[:60] in spec["content"]
    assert [p["id"] for p in spec["completion_probabilities"]] == [p["id"] for p in plain["completion_probabilities"]]
    t = spec["timings"]
    assert t["draft_n"] > 0 and 0 < t["draft_n_accepted"] <= t["draft_n"], t
    assert metric(ngrams, "spec_decode_num_draft_tokens_total") - before == t["draft_n"]
    assert spec["generation_settings"]["speculative.types"] == kind


def test_stories_and_concurrent_slots_are_unchanged(ngrams: Server) -> None:
    from concurrent.futures import ThreadPoolExecutor

    prompts = [REPEAT, STORY, REPEAT.replace("lighthouse", "windmill"), STORY.replace("girl", "boy")]
    with ThreadPoolExecutor(2) as pool:
        spec = list(pool.map(lambda p: complete(ngrams, p)["content"], prompts))
        plain = list(pool.map(lambda p: complete(ngrams, p, **OFF)["content"], prompts))
    assert spec == plain


def test_props_show_the_settings(ngrams: Server) -> None:
    params = ngrams.get("/props").json()["default_generation_settings"]["params"]
    assert params["speculative.types"] == ",".join(TYPES)
    assert (params["speculative.ngram_mod.n_match"], params["speculative.ngram_mod.n_min"],
            params["speculative.ngram_mod.n_max"]) == (8, 4, 16)
    assert (params["speculative.ngram_map_k.size_n"], params["speculative.ngram_map_k.size_m"]) == (4, 16)
    assert params["speculative.ngram_map_k4v.min_hits"] == 1
    r = ngrams.post("/completion", {"prompt": "x", "n_predict": 1, "speculative.type": "ngram-mod,bogus"})
    assert r.status_code == 400 and "speculative.type" in r.json()["error"]["message"]


LONG = " ".join([PASSAGE.replace("lighthouse", w) for w in ("lighthouse", "windmill", "castle")])


def test_long_drafts_on_every_slot_stay_within_the_outputs(ngrams: Server) -> None:
    """-np 2 sizes the context's outputs for 2 slots and 16 drafts each (34): requests asking for drafts of 200
    on both slots at once get fewer (libllama would abort the process past the limit), and the same text."""
    from concurrent.futures import ThreadPoolExecutor

    long = {"speculative.type": "ngram-simple", "speculative.n_max": 200, "speculative.ngram_size_n": 4,
            "speculative.ngram_size_m": 200}
    prompts = [f"Copy the text.\nText: {text}\nCopy: {text}\nText: {text}\nCopy:"
               for text in (LONG, LONG.replace("ships", "boats"))]
    with ThreadPoolExecutor(2) as pool:
        spec = list(pool.map(lambda p: complete(ngrams, p, n_predict=64, **long), prompts))
        plain = list(pool.map(lambda p: complete(ngrams, p, n_predict=64, **OFF)["content"], prompts))
    assert [s["content"] for s in spec] == plain
    assert all(s["timings"]["draft_n"] > 0 for s in spec), [s["timings"] for s in spec]
    assert ngrams.get("/health").status_code == 200


def test_spec_default(make_server: Any, f32_model: str) -> None:
    """--spec-default: ngram-mod with llama-server's 24/48/64, which needs a copy longer than 72 tokens."""
    srv = make_server("-m", f32_model, "-np", "1", "-c", "2048", "-t", "2", *EXACT, "--spec-default")
    params = srv.get("/props").json()["default_generation_settings"]["params"]
    assert params["speculative.types"] == "ngram-mod" and params["speculative.ngram_mod.n_min"] == 48
    prompt = f"Copy the text.\nText: {LONG}\nCopy: {LONG}\nText: {LONG}\nCopy:"
    spec = complete(srv, prompt, n_predict=96)
    assert spec["content"] == complete(srv, prompt, n_predict=96, **OFF)["content"]
    assert spec["timings"]["draft_n"] >= 48 and spec["timings"]["draft_n_accepted"] > 0, spec["timings"]
