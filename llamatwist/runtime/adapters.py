# -*- test-case-name: tests.test_lora -*-
"""LoRA adapters and control vectors given at start-up (--lora, --lora-scaled, --control-vector...),
loaded onto the model and applied server-wide to its context, as llama-server does at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from llamatwist.engine.context import Context
from llamatwist.engine.errors import ModelLoadError
from llamatwist.engine.model import LoraAdapter, Model

__all__ = ["AdapterSpec", "LoraInfo", "apply_adapters", "set_scales"]


@dataclass(frozen=True)
class AdapterSpec:
    loras: tuple[tuple[str, float], ...] = ()  # (path, scale) in flag order; the id is the index
    lora_init_without_apply: bool = False  # load with scale 0 (set later through POST /lora-adapters)
    control_vectors: tuple[tuple[str, float], ...] = ()  # (path, scale), summed
    cvec_layer_start: int = -1  # <= 0: from layer 1
    cvec_layer_end: int = -1  # <= 0: to the last layer


@dataclass(frozen=True)
class LoraInfo:
    """What GET /lora-adapters shows of one adapter."""

    id: int
    path: str
    scale: float
    task_name: str = ""  # adapter.lora.task_name
    prompt_prefix: str = ""  # adapter.lora.prompt_prefix


def apply_adapters(model: Model, ctx: Context, spec: AdapterSpec) -> tuple[list[LoraAdapter], tuple[LoraInfo, ...]]:
    """Load the adapters and apply them (and the control vector) to ``ctx``; raises ModelLoadError naming the file."""
    adapters: list[LoraAdapter] = []
    infos: list[LoraInfo] = []
    for i, (path, scale) in enumerate(spec.loras):
        if not Path(path).is_file():
            raise ModelLoadError(f"failed to load LoRA adapter {path}: no such file")
        adapter = model.load_lora(path)  # libllama refuses another architecture or shape
        adapters.append(adapter)
        infos.append(LoraInfo(i, path, 0.0 if spec.lora_init_without_apply else scale,
                              adapter.meta("adapter.lora.task_name"), adapter.meta("adapter.lora.prompt_prefix")))
    if adapters:
        set_scales(ctx, adapters, tuple(info.scale for info in infos))
    if spec.control_vectors:
        info = model.info()
        data = _control_vector(spec.control_vectors, info.n_embd, model.metadata().get("general.architecture", ""))
        start = spec.cvec_layer_start if spec.cvec_layer_start > 0 else 1
        end = spec.cvec_layer_end if spec.cvec_layer_end > 0 else info.n_layer
        ctx.set_control_vector(data.tolist(), info.n_embd, start, end)
    return adapters, tuple(infos)


def set_scales(ctx: Context, adapters: list[LoraAdapter], scales: tuple[float, ...]) -> None:
    """Apply ``adapters`` at ``scales`` (by id); those at 0 are left out: the base graph, no extra matmuls."""
    ctx.set_loras([(a, s) for a, s in zip(adapters, scales, strict=True) if s != 0.0])


def _control_vector(files: tuple[tuple[str, float], ...], n_embd: int, arch: str = "") -> np.ndarray:
    """The scaled sum of the files' ``direction.N`` tensors as ``n_embd`` floats per layer from layer 1; a
    file whose ``controlvector.model_hint`` names another architecture is refused."""
    layers: dict[int, np.ndarray] = {}
    for path, scale in files:
        try:
            reader = gguf.GGUFReader(path)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"failed to load control vector {path}: {e}") from e
        hint = reader.fields.get("controlvector.model_hint")
        if hint is not None and arch:
            named = bytes(hint.parts[-1]).decode("utf-8", "replace")
            if named != arch:
                raise ModelLoadError(f"failed to load control vector {path}: it is for {named} models, the model is "
                                     f"{arch}")
        for t in reader.tensors:
            if not t.name.startswith("direction."):
                continue
            try:
                il = int(t.name.split(".", 1)[1])
            except ValueError:
                raise ModelLoadError(f"failed to load control vector {path}: bad tensor name {t.name}") from None
            v = np.asarray(t.data, dtype=np.float32).reshape(-1)
            if il < 1 or v.size != n_embd:
                raise ModelLoadError(
                    f"failed to load control vector {path}: {t.name} has {v.size} values, the model's"
                    f" embedding size is {n_embd}"
                )
            layers[il] = layers.get(il, np.zeros(n_embd, np.float32)) + v * np.float32(scale)
    if not layers:
        raise ModelLoadError(f"failed to load control vector {files[0][0]}: no direction tensors")
    out = np.zeros((max(layers), n_embd), np.float32)
    for il, v in layers.items():
        out[il - 1] = v
    return out.reshape(-1)
