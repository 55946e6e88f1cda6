"""Request parsing: pure functions, no model."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llamatwist.api.errors import InvalidRequest, error_body
from llamatwist.api.params import (
    parse_completion,
    parse_detokenize,
    parse_prompts,
    parse_tokenize,
)
from llamatwist.config import SamplingDefaults
from llamatwist.sampling_defaults import RANDOM_SEED

D = SamplingDefaults()


def test_defaults_follow_server_config() -> None:
    req = parse_completion({"prompt": "hi"}, SamplingDefaults(temperature=0.3, n_predict=7))
    assert req.params.sampler.temperature == 0.3
    assert req.params.n_predict == 7
    assert req.params.sampler.seed == RANDOM_SEED
    assert req.params.cache_prompt is True and req.params.stream is False


def test_fields_and_aliases() -> None:
    p = parse_completion({"prompt": "x", "max_tokens": 5, "temperature": 0, "top_k": 3, "stop": "END",
                          "seed": 42, "n_probs": 2, "id_slot": 1, "ignore_eos": True}, D).params
    assert (p.n_predict, p.sampler.temperature, p.sampler.top_k, p.stop) == (5, 0.0, 3, ("END",))
    assert (p.sampler.seed, p.n_probs, p.id_slot, p.sampler.ignore_eos) == (42, 2, 1, True)
    assert parse_completion({"prompt": "x", "n_predict": 3, "max_tokens": 9}, D).params.n_predict == 3


@pytest.mark.parametrize("body, field", [
    ({"prompt": "x", "n_predict": "5"}, "n_predict"),
    ({"prompt": "x", "n_predict": 1.5}, "n_predict"),
    ({"prompt": "x", "n_predict": True}, "n_predict"),
    ({"prompt": "x", "n_predict": -2}, "n_predict"),
    ({"prompt": "x", "temperature": "0"}, "temperature"),
    ({"prompt": "x", "stream": 1}, "stream"),
    ({"prompt": "x", "stop": [1]}, "stop"),
    ({"prompt": "x", "n_probs": 2**31}, "n_probs"),
    ({"prompt": "x", "n_probs": -1}, "n_probs"),
    ({"prompt": "x", "n_predict": 2**31}, "n_predict"),
    ({"prompt": "x", "n_discard": -1}, "n_discard"),
    ({"prompt": "x", "n_cache_reuse": -1}, "n_cache_reuse"),
    ({"prompt": "x", "n_cache_reuse": "16"}, "n_cache_reuse"),
    ({}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": {"a": 1}}, "prompt"),
    ({"prompt": [1.5]}, "prompt"),
])
def test_bad_fields_are_named(body: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_completion(body, D)
    assert field in exc.value.message
    assert error_body(exc.value)["error"]["code"] == 400


def test_prompt_shapes() -> None:
    assert parse_prompts({"prompt": "abc"}) == [["abc"]]
    assert parse_prompts({"prompt": [1, 2, 3]}) == [[1, 2, 3]]
    assert parse_prompts({"prompt": [1, "mixed", 3]}) == [[1, "mixed", 3]]
    assert parse_prompts({"prompt": ["a", "b"]}) == [["a"], ["b"]]
    assert parse_prompts({"prompt": [[1, 2], "b"]}) == [[1, 2], ["b"]]
    for bad in (5, True, 2.5, [[]], [{}]):  # a bare token id is no prompt (llama-server: a 400 too)
        with pytest.raises(InvalidRequest, match="'prompt'"):
            parse_prompts({"prompt": bad})


def test_json_body() -> None:
    from llamatwist.api.http import load_json

    assert load_json(b'{"a": 1}') == {"a": 1}
    for raw in (b"", b"  ", b"{", b"\xff", b'{"a": NaN}', b'{"a": 1, "a": 2}'):
        with pytest.raises(InvalidRequest):
            load_json(raw)


def test_tokenize_and_detokenize_bodies() -> None:
    t = parse_tokenize({"content": "hi", "with_pieces": True})
    assert t.content == ["hi"] and t.with_pieces and not t.add_special and t.parse_special
    with pytest.raises(InvalidRequest):
        parse_tokenize({})
    with pytest.raises(InvalidRequest):
        parse_tokenize({"content": "x", "add_special": "yes"})
    with pytest.raises(InvalidRequest, match="'content' must be"):
        parse_tokenize({"content": 5})  # llama-server: a 500
    assert parse_tokenize({"content": [5]}).content == [5]
    assert parse_detokenize({"tokens": [1, 2]}) == [1, 2]
    with pytest.raises(InvalidRequest):
        parse_detokenize({"tokens": "1 2"})


def test_parameter_table_needs_no_native_library() -> None:
    """api.params imports and parses with the native extension unimportable
    (as before `pip install` has built it)."""
    code = textwrap.dedent(
        """
        import sys
        from importlib.abc import MetaPathFinder

        class NoNative(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "llamatwist.native" or name.startswith("llamatwist.native."):
                    raise ImportError(f"{name} blocked: no native library")
                return None

        sys.meta_path.insert(0, NoNative())
        from llamatwist.api.params import parse_completion
        from llamatwist.config import SamplingDefaults
        req = parse_completion({"prompt": "hi", "samplers": "kt", "top_k": 3}, SamplingDefaults(n_predict=7))
        assert req.params.n_predict == 7, req
        assert req.params.sampler.samplers == ("top_k", "temperature"), req
        assert req.params.sampler.top_k == 3, req
        print(sorted(m for m in sys.modules if m.startswith(("llamatwist.native", "llamatwist.engine"))))
        """
    )
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=repo, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def _schema_fields() -> set[str]:
    """Every request field (and alias) of the pinned llama-server's parameter schema."""
    import re

    import build_native

    source = (build_native.place_source() / "tools" / "server" / "server-schema.cpp").read_text()
    source = re.sub(r"#if 0.*?#endif", "", source, flags=re.DOTALL)  # fields llama-server has switched off
    source = "\n".join(line for line in source.splitlines() if not line.strip().startswith("//"))
    names = set(re.findall(r'new field_\w+\("([\w.]+)"', source))
    return names | set(re.findall(r'add_alias\("(\w+)"\)', source))


def test_every_llama_server_field_is_handled() -> None:
    from llamatwist.api.params import FIELDS, FIELDS_ELSEWHERE

    schema = _schema_fields()
    assert len(schema) > 60 and {"n_predict", "grammar_lazy", "max_tokens"} <= schema
    handled = {name for f in FIELDS for name in f.names} | set(FIELDS_ELSEWHERE)
    assert schema - handled == set(), "fields llama-server reads that llamatwist neither handles nor refuses"
