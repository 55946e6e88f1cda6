# -*- test-case-name: tests.test_flags_download -*-
"""``-dr/--docker-repo [<repo>/]<model>[:tag]``: a model from Docker Hub's model registry, as llama-server.

``ai/`` is the default namespace and ``latest`` the default tag. An anonymous pull token from the auth service,
the image manifest, its GGUF layer (media type ``application/vnd.docker.ai.gguf.v3``, or any with ``gguf`` in
it), then the blob, downloaded into the cache as ``<repo with _>_<tag>.gguf`` (resumable, like -mu) and checked
against the layer's sha256 digest (llama-server does not check it). A file already in the cache is used as it
is, without the network: ``--offline`` needs nothing more.

``LLAMATWIST_DOCKER_REGISTRY`` and ``LLAMATWIST_DOCKER_AUTH`` replace the registry and auth service URLs
(a mirror; the tests' local registry).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Final

from llamatwist.cli.download import DownloadError, fetch_model

__all__ = ["docker_model_path", "parse_docker_repo", "resolve_docker"]

REGISTRY: Final = "https://registry-1.docker.io"
AUTH: Final = "https://auth.docker.io"
_MANIFESTS: Final = "application/vnd.docker.distribution.manifest.v2+json,application/vnd.oci.image.manifest.v1+json"
_DIGEST: Final = re.compile(r"^sha256:([a-fA-F0-9]{64})$")


def parse_docker_repo(spec: str) -> tuple[str, str]:
    """``smollm2:135M-Q4_0`` -> (``ai/smollm2``, ``135M-Q4_0``), as llama-server reads -dr."""
    repo, _, tag = spec.partition(":")
    if not repo:
        raise DownloadError(f"--docker-repo {spec!r}: no repository")
    return (repo if "/" in repo else f"ai/{repo}"), (tag or "latest")


def docker_model_path(cache: Path, repo: str, tag: str) -> Path:
    return cache / "models" / f"{repo.replace('/', '_')}_{tag}.gguf"


def _get_json(url: str, headers: dict[str, str], what: str) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": "llamatwist", **headers})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        raise DownloadError(f"--docker-repo: {what}: HTTP {err.code} {err.reason} ({url})") from None
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"--docker-repo: {what}: {getattr(err, 'reason', err)} ({url})") from None
    except ValueError:
        raise DownloadError(f"--docker-repo: {what}: not JSON ({url})") from None


def resolve_docker(spec: str, cache: Path, *, offline: bool = False) -> Path:
    """The cached GGUF of `spec`, pulled from the registry first when it is not there."""
    repo, tag = parse_docker_repo(spec)
    dest = docker_model_path(cache, repo, tag)
    if dest.is_file():
        return dest
    if offline:
        raise DownloadError(f"--offline: {dest} is not in the cache and would be pulled from Docker Hub ({repo}:{tag})")
    registry = os.environ.get("LLAMATWIST_DOCKER_REGISTRY", REGISTRY).rstrip("/")
    auth = os.environ.get("LLAMATWIST_DOCKER_AUTH", AUTH).rstrip("/")
    query = urllib.parse.urlencode({"service": "registry.docker.io", "scope": f"repository:{repo}:pull"})
    answer = _get_json(f"{auth}/token?{query}", {}, "the pull token")
    token = answer.get("token") if isinstance(answer, dict) else None
    if not isinstance(token, str):
        raise DownloadError("--docker-repo: the token response has no 'token'")
    manifest = _get_json(f"{registry}/v2/{repo}/manifests/{tag}",
                         {"Authorization": f"Bearer {token}", "Accept": _MANIFESTS}, f"the manifest of {repo}:{tag}")
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    digest = next((layer.get("digest") for layer in layers or () if isinstance(layer, dict)
                   and "gguf" in str(layer.get("mediaType", ""))), None)
    if not isinstance(digest, str):
        raise DownloadError(f"--docker-repo {repo}:{tag}: no GGUF layer in its manifest")
    match = _DIGEST.match(digest)
    if match is None:
        raise DownloadError(f"--docker-repo {repo}:{tag}: invalid digest {digest!r} in its manifest")
    hexdigest = match.group(1).lower()
    return fetch_model(f"{registry}/v2/{repo}/blobs/sha256:{hexdigest}", dest, token=token, what="--docker-repo",
                       sha256=hexdigest)
