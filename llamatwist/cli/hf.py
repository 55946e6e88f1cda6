# -*- test-case-name: tests.test_flags_download -*-
"""-hf/-hfr <user>/<model>[:quant], -hff, -hft/HF_TOKEN, -hfd: a model from the Hugging Face hub cache.

The cache is the hub's own layout (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``): ``models--<user>--<model>/refs/main`` names a snapshot whose directory holds
the files. A file missing there is downloaded (``$HF_ENDPOINT``, else https://huggingface.co) unless
``--offline``; the file is picked as llama.cpp's find_best_model picks it: -hff, else the quant tag
(default Q4_K_M, then Q8_0, then the first model file), never an mmproj/imatrix file. With it come, as
llama.cpp's common_download_get_hf_plan: the model's other shards, the projector beside it and the draft heads
(``dflash-*``...) asked for, each picked by find_best_sibling's rules (`best_sibling`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from llamatwist.cli.download import DownloadError, Progress, fetch_model

__all__ = ["SIDECARS", "CachedModel", "HfDownload", "HfFiles", "HubUnreachable", "best_sibling", "cached_repo_models",
           "fetch_hf", "hf_repo", "hub_cache", "plan_hf", "remove_cached", "resolve_hf", "resolve_hf_files",
           "split_files"]

_NOT_MODEL = ("mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-")
_SHARD = re.compile(r"^(.+)-([0-9]{5})-of-([0-9]{5})$", re.IGNORECASE)  # a split model's <prefix>-0000N-of-0000M


def hf_repo(text: str) -> str:
    """-hf's syntax: <user>/<model>[:quant]."""
    repo = text.partition(":")[0]
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"invalid Hugging Face repository {text!r}: expected <user>/<model>[:quant]")
    return text


def hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def _is_model(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    if not name.endswith(".gguf") or any(bad in name for bad in _NOT_MODEL):
        return False
    split = re.search(r"-(\d{5})-of-(\d{5})\.gguf$", name)
    return split is None or int(split.group(1)) == 1


def cached_models(models_dir: Path) -> list[str]:
    """-cl/--cache-list: the Hugging Face cache's model files (``user/repo:file``, as -hf/-hff name them) and
    the GGUF files in llamatwist's own model cache (-mu downloads, the default model)."""
    out = []
    root = hub_cache()
    for repo_dir in sorted(root.glob("models--*")):
        repo = repo_dir.name.removeprefix("models--").replace("--", "/", 1)
        names = {p.name for p in repo_dir.glob("snapshots/*/**/*.gguf") if _is_model(str(p))}
        out += [f"{repo}:{name}" for name in sorted(names)]
    out += [str(p) for p in sorted(models_dir.glob("*.gguf")) if _is_model(str(p))]
    return out


def best_file(files: Iterable[str], tag: str) -> str | None:
    files = sorted(files)
    for t in [tag] if tag else ["Q4_K_M", "Q8_0"]:
        pattern = re.compile(re.escape(t) + "[.-]", re.IGNORECASE)
        for f in files:
            if _is_model(f) and pattern.search(f):
                return f
    if not tag:
        return next((f for f in files if _is_model(f)), None)
    return None


class HubUnreachable(DownloadError):
    """The hub did not answer (no network, a wrong HF_ENDPOINT): not the name's fault."""


@dataclass(frozen=True)
class CachedModel:
    """A model of the hub cache as llama-server's router lists it: ``<user>/<model>:<TAG>``."""

    name: str
    path: Path  # its (first) file
    mmproj: Path | None  # a projector beside it in the snapshot


def split_tag(filename: str) -> tuple[str, str, int]:
    """llama.cpp's get_gguf_split_info: the name less ``.gguf`` and any ``-0000N-of-0000M``, its quant tag
    (what follows the last ``-`` or ``.``, upper-cased; "" when none) and its shard number (1 when unsplit)."""
    stem = filename.removesuffix(".gguf")
    index = 1
    if m := _SHARD.match(stem):
        stem, index = m[1], int(m[2])
    tag = re.search(r"[-.]([A-Z0-9_]+)$", stem, re.IGNORECASE)
    return stem, tag[1].upper() if tag else "", index


def cached_repo_models() -> list[CachedModel]:
    """Every model in the hub cache, one per repository and quant tag (the router's "cache" source):
    first shards only, never a projector or a draft head, nothing without a tag."""
    out: dict[str, CachedModel] = {}
    for repo_dir in sorted(hub_cache().glob("models--*")):
        snap = _snapshot(repo_dir)
        if snap is None:
            continue
        repo = repo_dir.name.removeprefix("models--").replace("--", "/", 1)
        files = sorted(p for p in snap.rglob("*.gguf"))
        mmproj = next((p for p in files if "mmproj" in p.name), None)
        for path in files:
            prefix, tag, index = split_tag(path.name)
            if index == 1 and tag and not any(bad in prefix for bad in _NOT_MODEL):
                out.setdefault(f"{repo}:{tag}", CachedModel(f"{repo}:{tag}", path, mmproj))
    return list(out.values())


def remove_cached(model: CachedModel) -> list[Path]:
    """Delete a cached model's files (its shards too) and the blobs they link to; what was removed."""
    prefix, _, _ = split_tag(model.path.name)
    removed: list[Path] = []
    for path in sorted(model.path.parent.glob("*.gguf")):
        if split_tag(path.name)[0] != prefix:
            continue
        # the hub's layout links snapshot files to blobs/<hash>: the link's own target, not where it leads
        target = Path(os.path.normpath(path.parent / os.readlink(path))) if path.is_symlink() else None
        path.unlink(missing_ok=True)
        removed.append(path)
        if target is not None and target.parent.name == "blobs":
            target.unlink(missing_ok=True)
            removed.append(target)
    return removed


def _snapshot(repo_dir: Path) -> Path | None:
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        snap = repo_dir / "snapshots" / ref.read_text().strip()
        if snap.is_dir():
            return snap
    snaps = sorted((repo_dir / "snapshots").glob("*")) if (repo_dir / "snapshots").is_dir() else []
    return snaps[-1] if snaps else None


def _api(url: str, token: str | None) -> dict[str, object]:
    request = urllib.request.Request(url, headers={"User-Agent": "llamatwist"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            data = json.loads(response.read())
    except urllib.error.HTTPError as err:
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise HubUnreachable(f"{url}: {getattr(err, 'reason', err)}") from None
    except ValueError as err:
        raise DownloadError(f"{url}: {err}") from None
    if not isinstance(data, dict):
        raise DownloadError(f"{url}: unexpected answer")
    return data


# draft heads a repository ships beside its model ("<kind>-*.gguf"), in llama-server's order of preference: an MTP
# head outranks the model's own MTP layers, a DSpark head (a DFlash one with a Markov head) a DFlash one
SIDECARS = ("mtp", "dspark", "dflash", "eagle3")


@dataclass(frozen=True)
class HfDownload:
    """What -hf `spec` takes from the repository (its snapshot ``sha``, names relative to it, as llama.cpp's
    common_download_get_hf_plan picks them): the model's first shard and every shard of it, the projector
    beside it, the requested draft heads."""

    repo_dir: Path
    sha: str  # the hub's revision the files come from
    snapshot: Path  # where they go: the cached snapshot when there is one (its files are not fetched again)
    endpoint: str
    repo: str
    model: str | None  # None: only draft heads were asked of a repository without a model
    shards: tuple[str, ...] = ()  # the model's files (itself when unsplit), first shard first
    mmproj: str | None = None
    sidecars: tuple[tuple[str, str], ...] = ()  # (kind, name) of SIDECARS found
    preset: str | None = None  # a preset repository's preset.ini: then nothing else is taken

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.shards, *([self.mmproj] if self.mmproj else []), *(name for _, name in self.sidecars),
                *([self.preset] if self.preset else []))

    @property
    def url(self) -> str:
        """The model's (first) file's URL, else the first draft head's."""
        return self.url_of(self.names[0])

    def url_of(self, name: str) -> str:
        return f"{self.endpoint}/{self.repo}/resolve/{self.sha}/{name}"

    def path(self, name: str | None) -> Path | None:
        return self.snapshot / name if name else None


@dataclass(frozen=True)
class HfFiles:
    """Where -hf's files are, once fetched."""

    model: Path | None
    mmproj: Path | None = None
    sidecars: dict[str, Path] = dataclasses.field(default_factory=dict)
    preset: Path | None = None  # a preset repository's preset.ini (no model): the router's --models-preset


def resolve_hf(spec: str, file: str | None = None, *, token: str | None = None, offline: bool = False,
               progress: Progress | None = None) -> Path:
    """The local path of -hf `spec`'s model (-hff `file`), from the hub cache or downloaded into it."""
    model = resolve_hf_files(spec, file, token=token, offline=offline, progress=progress).model
    assert model is not None
    return model


def resolve_hf_files(spec: str, file: str | None = None, *, token: str | None = None, offline: bool = False,
                     progress: Progress | None = None, mmproj: bool = False, sidecars: tuple[str, ...] = (),
                     need_model: bool = True) -> HfFiles:
    """-hf `spec`'s model (-hff `file`) with its shards, its projector (``mmproj``) and the draft heads of
    ``sidecars`` it ships, from the hub cache or downloaded into it (llama-server's plan: the hub's listing,
    else, offline or unreachable, the cached snapshot's); without ``need_model``, a draft head found is enough."""
    plan = plan_hf(spec, file, token=token, offline=offline, mmproj=mmproj, sidecars=sidecars, need_model=need_model)
    fetch_hf(plan, token=token, progress=progress, offline=offline)
    return HfFiles(plan.path(plan.model), plan.path(plan.mmproj),
                   {kind: plan.snapshot / name for kind, name in plan.sidecars}, plan.path(plan.preset))


def plan_hf(spec: str, file: str | None = None, *, token: str | None = None, offline: bool = False,
            mmproj: bool = False, sidecars: tuple[str, ...] = (), need_model: bool = True) -> HfDownload:
    """Which files of `spec` -hf takes (DownloadError when the repository or the model is not there)."""
    repo, _, tag = spec.partition(":")
    repo_dir = hub_cache() / ("models--" + repo.replace("/", "--"))
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    names, sha = _listing(repo, repo_dir, endpoint, token, offline)
    snapshot = _snapshot(repo_dir) or repo_dir / "snapshots" / sha
    if "preset.ini" in names:  # a preset repository: llama-server serves its presets as a router
        return HfDownload(repo_dir, sha, snapshot, endpoint, repo, None, preset="preset.ini")
    model = file if file in names else (None if file else best_file(names, tag))
    found = tuple((kind, name) for kind in sidecars
                  if (name := best_sibling(names, model or "", f"{kind}-", tag)) is not None)
    if model is None and (need_model or not found):
        available = ", ".join(n for n in names if n.endswith(".gguf")) or "none"
        if offline:
            what = file or (f"a {tag} GGUF file" if tag else "a GGUF model file")
            raise DownloadError(f"--offline: {what} of {repo} is not in the Hugging Face cache {repo_dir}")
        raise DownloadError(f"{repo}: no {file or (tag or 'model')} GGUF file (available: {available})")
    return HfDownload(repo_dir, sha, snapshot, endpoint, repo, model, split_files(names, model) if model else (),
                      best_sibling(names, model, "mmproj") if mmproj and model else None, found)


def _listing(repo: str, repo_dir: Path, endpoint: str, token: str | None, offline: bool) -> tuple[list[str], str]:
    """The repository's files and snapshot: the hub's answer, else (offline, or the hub did not answer) the
    cached snapshot's."""
    error: DownloadError | None = None
    if not offline:
        try:
            info = _api(f"{endpoint}/api/models/{repo}", token)
            siblings = info.get("siblings")
            names = [s["rfilename"] for s in siblings if isinstance(s, dict) and "rfilename" in s] \
                if isinstance(siblings, list) else []
            return names, str(info.get("sha") or "main")
        except DownloadError as err:
            error = err
    snap = _snapshot(repo_dir)
    if snap is not None:
        return sorted(str(p.relative_to(snap)) for p in [*snap.rglob("*.gguf"), *snap.glob("preset.ini")]), snap.name
    if error is not None:
        raise error
    return [], ""


def split_files(names: Iterable[str], first: str) -> tuple[str, ...]:
    """``first`` and the other shards of its split model (llama.cpp's get_split_files), in order."""
    m = _SHARD.match(first.removesuffix(".gguf"))
    if m is None:
        return (first,)
    return tuple(sorted(n for n in names if (o := _SHARD.match(n.removesuffix(".gguf"))) is not None
                        and o[1] == m[1] and o[3] == m[3]))


def _quant_bits(tag: str) -> int:
    """Q4_K_M: 4, F16: 16, "": 0 (llama.cpp's extract_quant_bits, of a quant tag)."""
    m = re.search(r"\d+", tag)
    return int(m[0]) if m else 0


def best_sibling(names: Iterable[str], model: str, keyword: str, tag: str = "") -> str | None:
    """The file of ``names`` whose path holds ``keyword`` ("mmproj", "dflash-"...) that goes best with
    ``model``, as llama.cpp's find_best_sibling: in the model's directory or the nearest above it, then of
    exactly the quant ``tag``, then of the nearest quant bits (to the tag's, else the model's)."""
    tag_upper = tag.upper()
    model_bits = _quant_bits(tag_upper or split_tag(model.rsplit("/", 1)[-1])[1])
    model_dirs = model.split("/")[:-1]
    best: tuple[int, bool, int] | None = None  # (depth, exact, -diff): greater is better
    chosen = None
    for name in names:
        if not name.endswith(".gguf") or keyword not in name:
            continue
        dirs = name.split("/")[:-1]
        if dirs != model_dirs[:len(dirs)]:  # not in a directory on the model's path
            continue
        exact = bool(tag_upper) and f"-{tag_upper}." in name.upper()
        rank = (len(dirs), exact, -abs(_quant_bits(split_tag(name.rsplit("/", 1)[-1])[1]) - model_bits))
        if best is None or rank > best:
            best, chosen = rank, name
    return chosen


def fetch_hf(plan: HfDownload, *, token: str | None = None, progress: Progress | None = None,
             offline: bool = False) -> None:
    """Download the plan's files that are not in the snapshot yet (``progress``: the bytes of all of them so
    far); a new snapshot becomes the repository's ``refs/main``."""
    done = 0
    for name in plan.names:
        dest = plan.path(name)
        assert dest is not None
        before = done

        def told(n: int, total: int | None, before: int = before) -> None:
            if progress is not None:
                progress(before + n, None if total is None else before + total)

        fetch_model(plan.url_of(name), dest, token=token, progress=told if progress else None, offline=offline,
                    what="-hf", gguf=name != plan.preset)
        done = before + dest.stat().st_size
    ref = plan.repo_dir / "refs" / "main"
    if not ref.is_file():
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(plan.snapshot.name)
