"""The editor interface: hyper-parameter configs, the EditResult, and weight-delta bookkeeping.

Every editor (locate-and-edit, fine-tuning, hypernetwork) implements :class:`Editor`. ``apply`` edits the
model in place and returns an :class:`EditResult` holding exactly what was added to each weight, so a run
can be replayed bit for bit (re-adding the stored deltas in order), undone bit for bit (the result keeps
the original weights of every matrix it changed), or exported as safetensors.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict

from seqedit.data.records import EditRequest
from seqedit.editors.profiles import ProfileChoice, choose_profile, settings_for
from seqedit.models.adapters.base import ArchitectureAdapter
from seqedit.models.loading import LoadedModel
from seqedit.utils.io import load_tensors, save_tensors_atomic

# Separates a parameter name from a compact delta's part in a saved EditResult's keys.
COMPACT_SEP = "::"


class EditorConfig(BaseModel):
    """Base class of every editor's hyper-parameters. Unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EditError(RuntimeError):
    """An edit failed (diverging loss, non-finite update ...); the model was left unchanged."""


@dataclass
class EditResult:
    """What one call of :meth:`Editor.apply` did to the model.

    ``deltas`` maps parameter names (``"model.layers.5.mlp.down_proj.weight"``) to the exact tensor added
    to that parameter, in the parameter's own layout and dtype. ``originals`` holds the parameter values
    before the edit (same keys), for an exact undo; it is not saved with the result. ``precise`` optionally
    holds, for some keys, the float64 delta (native layout) that ``deltas`` rounds: :meth:`save` then stores
    a low-rank delta as exact factors (:mod:`seqedit.editors.compact`) instead of the dense tensor.
    """

    method: str
    deltas: dict[str, torch.Tensor]
    originals: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    timings: dict[str, float] = field(default_factory=dict)
    request_stats: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    precise: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def changed_parameters(self) -> list[str]:
        return sorted(self.deltas)

    def delta_norms(self) -> dict[str, float]:
        return {name: float(d.double().norm()) for name, d in self.deltas.items()}

    @torch.no_grad()
    def undo(self, model: torch.nn.Module) -> None:
        """Restore the changed parameters to their exact values before this edit."""
        if set(self.originals) != set(self.deltas):
            raise RuntimeError("this EditResult has no original weights (loaded from disk?); use revert()")
        params = dict(model.named_parameters(remove_duplicate=False))
        for name, original in self.originals.items():
            params[name].copy_(original)

    @torch.no_grad()
    def replay(self, model: torch.nn.Module) -> None:
        """Add the deltas again (e.g. to rebuild an edited model from a base model and a ledger)."""
        params = dict(model.named_parameters(remove_duplicate=False))
        for name, delta in self.deltas.items():
            params[name].add_(delta.to(params[name].device))

    @torch.no_grad()
    def revert(self, model: torch.nn.Module) -> None:
        """Subtract the deltas (exact up to float rounding; prefer :meth:`undo` when originals exist)."""
        params = dict(model.named_parameters(remove_duplicate=False))
        for name, delta in self.deltas.items():
            params[name].sub_(delta.to(params[name].device))

    def save(self, path: str | Path, compact: bool = True) -> None:
        """Write the deltas as safetensors, with method, timings and stats in the metadata.

        With ``compact``, a delta with a ``precise`` float64 version of low rank is stored as the keys
        ``<name>::left``, ``::right``, ``::fix_index``, ``::fix_value`` (listed with their checksum in the
        ``compact`` metadata entry); :meth:`load` decodes it bit for bit. Other deltas are stored densely.
        """
        import json

        from seqedit.editors.compact import CompactDelta

        tensors: dict[str, torch.Tensor] = {}
        encoded: dict[str, str] = {}
        for name, delta in self.deltas.items():
            exact = self.precise.get(name) if compact else None
            packed = CompactDelta.encode(exact, delta) if exact is not None else None
            if packed is None:
                tensors[name] = delta
                continue
            encoded[name] = packed.digest
            tensors.update({f"{name}{COMPACT_SEP}left": packed.left, f"{name}{COMPACT_SEP}right": packed.right,
                            f"{name}{COMPACT_SEP}fix_index": packed.fix_index,
                            f"{name}{COMPACT_SEP}fix_value": packed.fix_value})
        metadata = {
            "method": self.method,
            "timings": json.dumps(self.timings),
            "request_stats": json.dumps(self.request_stats, default=str),
            "info": json.dumps(self.info, default=str),
            "compact": json.dumps(encoded),
        }
        save_tensors_atomic(path, tensors, metadata)

    @classmethod
    def load(cls, path: str | Path) -> EditResult:
        """Read a result written by :meth:`save` (dense files of earlier versions included)."""
        import json

        from safetensors import safe_open

        from seqedit.editors.compact import CompactDelta

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_tensors(path)
        deltas = {name: t for name, t in tensors.items() if COMPACT_SEP not in name}
        for name, digest in json.loads(meta.get("compact", "{}")).items():
            keys = [f"{name}{COMPACT_SEP}{part}" for part in ("left", "right", "fix_index", "fix_value")]
            if any(key not in tensors for key in keys):
                raise ValueError(f"{path}: the compact delta of {name} is incomplete (file damaged?)")
            left, right, fix_index, fix_value = (tensors[key] for key in keys)
            packed = CompactDelta(left, right, fix_index, fix_value, digest)
            try:
                deltas[name] = packed.decode(name)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from exc
        return cls(
            method=meta.get("method", "unknown"),
            deltas=deltas,
            timings=json.loads(meta.get("timings", "{}")),
            request_stats=json.loads(meta.get("request_stats", "[]")),
            info=json.loads(meta.get("info", "{}")),
        )


class PhaseTimer:
    """Accumulates wall-clock seconds per named phase (statistics, targets, solve ...)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


@torch.no_grad()
def commit_deltas(
    adapter: ArchitectureAdapter, canonical_deltas: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Add canonical ``[out, in]`` deltas (keyed by module path) to the model.

    Checks every delta is finite *before* touching any weight, so a failed edit changes nothing.
    Returns ``(deltas, originals)`` keyed by parameter name, in native layout and dtype.
    """
    for path, delta in canonical_deltas.items():
        if not torch.isfinite(delta).all():
            raise EditError(f"the update of {path} contains NaN or Inf; no weight was changed")
    deltas: dict[str, torch.Tensor] = {}
    originals: dict[str, torch.Tensor] = {}
    for path, delta in canonical_deltas.items():
        param = adapter.parameter(path)
        name = f"{path}.weight"
        originals[name] = param.detach().clone()
        native = adapter.to_native(path, delta).to(device=param.device, dtype=param.dtype).contiguous()
        param.add_(native)
        deltas[name] = native
    return deltas, originals


BatchMode = Literal["batch", "sequential"]


def profile_choice(lm: LoadedModel | None, profile: str | None = None) -> ProfileChoice:
    """The settings profile for ``lm``: ``profile`` if given, else found from its checkpoint name and type."""
    if lm is None:
        return choose_profile(profile, None)
    model_type = lm.info.get("model_type") or getattr(getattr(lm.model, "config", None), "model_type", None)
    return choose_profile(profile, lm.name, model_type)


class Editor(ABC):
    """A knowledge editor. Subclasses set ``name``, ``config_class`` and implement :meth:`apply`.

    Editors keep any state that carries across calls (AlphaEdit's preserved keys, MEMIT's memory of past
    edits, a trained hypernetwork) on the instance, exposed through :meth:`state_dict`.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[EditorConfig]]
    description: ClassVar[str] = ""
    # "batch": many facts in one apply() is the method's intent (MEMIT); "sequential": one at a time (ROME).
    intended_batch_mode: ClassVar[BatchMode] = "batch"
    # Progress bars of one-off work (the key statistics); a quiet run (`seqedit run -q`) turns them off.
    show_progress: bool = True
    # Which shared entries of a settings profile apply (editors/profiles.py); None: only the method's own.
    profile_group: ClassVar[str | None] = None

    def __init__(self, config: EditorConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise TypeError(f"{self.name} expects a {self.config_class.__name__}, got {type(self.config).__name__}")

    @classmethod
    def default_config(cls, lm: LoadedModel | None = None, profile: str | None = None) -> EditorConfig:
        """Defaults for this model: the class defaults updated with the settings profile's values
        (``profile``, else the model's own profile; :mod:`seqedit.editors.profiles`)."""
        return cls.config_class.model_validate(cls.profile_defaults(profile_choice(lm, profile)))

    @classmethod
    def profile_defaults(cls, choice: ProfileChoice) -> dict[str, Any]:
        """The values a profile sets for this method (only fields its config has)."""
        settings = settings_for(choice, cls.name, cls.config_class.model_fields, cls.profile_group)
        return {name: setting.value for name, setting in settings.items()}

    @abstractmethod
    def apply(self, lm: LoadedModel, requests: Sequence[EditRequest]) -> EditResult:
        """Edit ``lm.model`` in place so that it states the requested facts."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors that carry across apply() calls (empty for stateless editors)."""
        return {}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"{self.name} is stateless but got state keys {sorted(state)[:5]}")
