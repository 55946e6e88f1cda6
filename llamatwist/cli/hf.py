# -*- test-case-name: tests.test_flags_download -*-
"""-hf/-hfr <user>/<model>[:quant], -hff, -hft/HF_TOKEN, -hfd: a model from the Hugging Face hub cache.

The cache is the hub's own layout (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``): ``models--<user>--<model>/refs/main`` names a snapshot whose directory holds
the files. A file missing there is downloaded (``$HF_ENDPOINT``, else https://huggingface.co) unless
``--offline``; the file is picked as llama.cpp's find_best_model picks it: -hff, else the quant tag
(default Q4_K_M, then Q8_0, then the first model file), never an mmproj/imatrix file.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from llamatwist.cli.download import DownloadError, Progress, fetch_model

__all__ = ["CachedModel", "HfDownload", "HubUnreachable", "cached_repo_models", "fetch_hf", "hf_repo", "hub_cache", "plan_hf",
           "remove_cached", "resolve_hf"]

_NOT_MODEL = ("mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-")


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
    if m := re.match(r"^(.+)-([0-9]{5})-of-([0-9]{5})$", stem, re.IGNORECASE):
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


def resolve_hf(spec: str, file: str | None = None, *, token: str | None = None, offline: bool = False,
               progress: Progress | None = None) -> Path:
    """The local path of -hf `spec` (-hff `file`), from the hub cache or downloaded into it."""
    repo, _, tag = spec.partition(":")
    repo_dir = hub_cache() / ("models--" + repo.replace("/", "--"))
    snap = _snapshot(repo_dir)
    if snap is not None:
        local = [str(p.relative_to(snap)) for p in snap.rglob("*.gguf")]
        name = file if file in local else (None if file else best_file(local, tag))
        if name:
            return snap / name
    if offline:
        what = file or (f"a {tag} GGUF file" if tag else "a GGUF model file")
        raise DownloadError(f"--offline: {what} of {repo} is not in the Hugging Face cache {repo_dir}")
    return fetch_hf(plan_hf(spec, file, token=token), token=token, progress=progress)


@dataclass(frozen=True)
class HfDownload:
    """Where -hf `spec`'s file comes from and goes to (the hub's answer about the repository)."""

    url: str
    dest: Path
    repo_dir: Path
    sha: str


def plan_hf(spec: str, file: str | None = None, *, token: str | None = None) -> HfDownload:
    """Ask the hub which file of `spec` to download (DownloadError when the repository or the file is not
    there)."""
    repo, _, tag = spec.partition(":")
    repo_dir = hub_cache() / ("models--" + repo.replace("/", "--"))
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    info = _api(f"{endpoint}/api/models/{repo}", token)
    siblings = info.get("siblings")
    names = [s["rfilename"] for s in siblings if isinstance(s, dict) and "rfilename" in s] \
        if isinstance(siblings, list) else []
    name = file if file else best_file(names, tag)
    if not name or name not in names:
        available = ", ".join(n for n in names if n.endswith(".gguf")) or "none"
        raise DownloadError(f"{repo}: no {file or (tag or 'model')} GGUF file (available: {available})")
    sha = str(info.get("sha") or "main")
    return HfDownload(f"{endpoint}/{repo}/resolve/{sha}/{name}", repo_dir / "snapshots" / sha / name, repo_dir, sha)


def fetch_hf(plan: HfDownload, *, token: str | None = None, progress: Progress | None = None) -> Path:
    path = fetch_model(plan.url, plan.dest, token=token, progress=progress)
    (plan.repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (plan.repo_dir / "refs" / "main").write_text(plan.sha)
    return path
