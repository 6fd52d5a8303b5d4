"""MEND for a whole model: the networks of all edited matrices, their learned step sizes, the gradient
factors they consume, and checkpoints (safetensors weights + a JSON spec).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from seqedit.editors.gradient import edited_paths
from seqedit.editors.mend.network import MendNetwork, pseudo_gradient
from seqedit.models.adapters.base import ArchitectureAdapter, MatrixKind
from seqedit.models.loading import LoadedModel
from seqedit.models.tokens import PromptTargetBatch, target_log_probs
from seqedit.settings import get_settings
from seqedit.utils.io import load_tensors, save_tensors_atomic, write_json_atomic
from seqedit.utils.paths import safe_path_component

WEIGHTS_FILE = "mend.safetensors"
SPEC_FILE = "mend.json"
FORMAT_VERSION = 1

# (x [n, d_in], delta [n, d_out]) per edited module path
Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]


class MendSpec(BaseModel):
    """Everything needed to rebuild a MEND hypernetwork and check it fits a model."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    model: str = Field(description="Model the networks were trained for (name or path as loaded).")
    layers: list[int]
    kinds: list[MatrixKind]
    paths: list[str] = Field(description="Edited module paths, in mode order.")
    shapes: list[tuple[int, int]] = Field(description="Canonical [out, in] shape of each edited matrix.")
    rank: int = Field(description="Rank of the low-rank blocks.")
    edit_lr_init: float = Field(description="Initial per-matrix step size alpha.")
    training: dict[str, Any] = Field(default_factory=dict, description="Training settings and statistics.")


def _shape_key(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


class MendHypernet(nn.Module):
    """One :class:`MendNetwork` per matrix shape (matrices of one shape share it, one mode each) and a
    learned step size per matrix."""

    def __init__(self, spec: MendSpec) -> None:
        super().__init__()
        if len(spec.paths) != len(spec.shapes) or not spec.paths:
            raise ValueError("MendSpec needs one shape per edited path, and at least one path")
        self.spec = spec
        self.modes: dict[str, tuple[str, int]] = {}
        counts: dict[str, int] = {}
        for path, shape in zip(spec.paths, spec.shapes, strict=True):
            key = _shape_key(shape)
            self.modes[path] = (key, counts.get(key, 0))
            counts[key] = counts.get(key, 0) + 1
        self.networks = nn.ModuleDict()
        for shape in spec.shapes:
            key = _shape_key(shape)
            if key not in self.networks:
                out_dim, in_dim = shape
                self.networks[key] = MendNetwork(in_dim, out_dim, spec.rank, counts[key])
        self.edit_lrs = nn.Parameter(torch.full((len(spec.paths),), float(spec.edit_lr_init)))

    def network(self, key: str) -> MendNetwork:
        network = self.networks[key]
        assert isinstance(network, MendNetwork)  # ModuleDict is typed as holding any Module
        return network

    def update_stats(self, factors: Factors) -> None:
        for path, (x, delta) in factors.items():
            key, mode = self.modes[path]
            self.network(key).update_stats(x, delta, mode)

    def updates(self, factors: Factors) -> dict[str, torch.Tensor]:
        """``ΔW = −α_ℓ Σ_i δ̃_i x̃_iᵀ`` (canonical ``[out, in]``, float32) for every edited path."""
        result: dict[str, torch.Tensor] = {}
        for index, path in enumerate(self.spec.paths):
            x, delta = factors[path]
            key, mode = self.modes[path]
            x_tilde, delta_tilde = self.network(key)(x, delta, mode)
            result[path] = -self.edit_lrs[index] * pseudo_gradient(x_tilde, delta_tilde)
        return result

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory: str | Path, training: Mapping[str, Any] | None = None) -> Path:
        """Write ``mend.safetensors`` and ``mend.json`` into ``directory`` (atomically); returns it."""
        out = Path(directory)
        if training is not None:
            self.spec = self.spec.model_copy(update={"training": dict(training)})
        tensors = {k: v.detach() for k, v in self.state_dict().items()}
        save_tensors_atomic(out / WEIGHTS_FILE, tensors, {"format": "seqedit-mend", "version": str(FORMAT_VERSION)})
        write_json_atomic(out / SPEC_FILE, self.spec.model_dump(mode="json"))
        return out

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> MendHypernet:
        """Rebuild a hypernetwork from a directory written by :meth:`save`."""
        folder = Path(directory)
        if folder.is_file():
            folder = folder.parent
        spec_file, weights_file = folder / SPEC_FILE, folder / WEIGHTS_FILE
        if not spec_file.is_file() or not weights_file.is_file():
            raise FileNotFoundError(
                f"no MEND checkpoint in {folder}: expected {SPEC_FILE} and {WEIGHTS_FILE} (train one with "
                "`seqedit mend train`)"
            )
        spec = MendSpec.model_validate(json.loads(spec_file.read_text(encoding="utf-8")))
        if spec.format_version != FORMAT_VERSION:
            raise ValueError(f"{spec_file}: MEND format {spec.format_version}, this seqedit reads {FORMAT_VERSION}")
        net = cls(spec)
        net.load_state_dict(load_tensors(weights_file), strict=True)
        return net.to(device)

    def check_fits(self, adapter: ArchitectureAdapter) -> None:
        """Raise ValueError unless every edited path exists in the model with the trained shape."""
        for path, shape in zip(self.spec.paths, self.spec.shapes, strict=True):
            try:
                actual = tuple(adapter.weight(path).shape)
            except KeyError:
                raise ValueError(f"MEND checkpoint edits {path}, which the model does not have") from None
            if actual != tuple(shape):
                raise ValueError(f"MEND checkpoint expects {path} of shape {tuple(shape)}, the model has {actual}")


def default_checkpoint_dir(model_name: str) -> Path:
    """Where ``seqedit mend train`` saves, and ``method: mend`` looks, by default."""
    return get_settings().cache_dir / "mend" / safe_path_component(model_name)


def build_spec(
    lm: LoadedModel, layers: Sequence[int], kinds: Sequence[MatrixKind], rank: int, edit_lr_init: float
) -> MendSpec:
    paths = edited_paths(lm.adapter, layers, kinds)
    shapes = [(int(lm.adapter.weight(p).shape[0]), int(lm.adapter.weight(p).shape[1])) for p in paths]
    return MendSpec(
        model=lm.name, layers=list(layers), kinds=list(kinds), paths=paths, shapes=shapes, rank=rank,
        edit_lr_init=edit_lr_init,
    )


# ---------------------------------------------------------------------- gradient factors
@contextmanager
def _output_leaves(adapter: ArchitectureAdapter, paths: Sequence[str]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record each module's input and replace its output by a leaf that requires grad, so that
    ``∂L/∂y`` of every edited module can be read without gradients on any model weight."""
    store: dict[str, list[torch.Tensor]] = {}
    handles = []

    def make_hook(path: str):
        def hook(_module: nn.Module, args: tuple[object, ...], output: torch.Tensor) -> torch.Tensor:
            x = args[0]
            assert isinstance(x, torch.Tensor)
            leaf = output.detach().requires_grad_(True)
            store[path] = [x.detach(), leaf]
            return leaf

        return hook

    try:
        for path in paths:
            handles.append(adapter.module(path).register_forward_hook(make_hook(path)))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def gradient_factors(
    lm: LoadedModel, paths: Sequence[str], batch: PromptTargetBatch, edit_rows: Sequence[int]
) -> tuple[Factors, torch.Tensor]:
    """Layer inputs and output gradients of the edit loss (sum over ``edit_rows`` of each row's mean
    target NLL), one row per token with a non-zero gradient. Also returns the batch's logits (detached)."""
    with torch.enable_grad(), _output_leaves(lm.adapter, paths) as store:
        logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        _total, mean_lp = target_log_probs(logits, batch)
        loss = -mean_lp[list(edit_rows)].sum()
        grads = torch.autograd.grad(loss, [store[p][1] for p in paths])
    row_mask = torch.zeros_like(batch.attention_mask, dtype=torch.bool)
    row_mask[list(edit_rows)] = True
    token_mask = row_mask & batch.attention_mask.bool()
    factors: Factors = {}
    for path, grad in zip(paths, grads, strict=True):
        x = store[path][0][token_mask]
        delta = grad[token_mask]
        nonzero = (delta != 0).any(-1) & (x != 0).any(-1)
        factors[path] = (x[nonzero], delta[nonzero])
    return factors, logits.detach()
