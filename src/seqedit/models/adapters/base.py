"""Architecture adapters: one small class per model family mapping canonical sites to modules.

Canonical sites (``layer`` is 0-based):

====================  =====================================================================
site                  meaning
====================  =====================================================================
``block``             decoder layer ``layer``; its output is the residual stream after it
``mlp``               the MLP of ``layer``; its output is the MLP's contribution
``mlp.out_proj``      the MLP output projection -- the matrix locate-and-edit methods change
                      (``down_proj`` / ``c_proj`` / ``fc_out`` / ``dense_4h_to_h``). Its input is
                      the *key* ``k`` (shape ``[batch, seq, d_mlp]``), its output the *value*
``mlp.in_proj``       the MLP input projections (a list: gate/up, ``c_fc``, ``fc_in`` ...)
``attn``              the attention module of ``layer``
``attn.out_proj``     the attention output projection
``attn.in_proj``      the attention input projections (a list)
``final_norm``        the final normalisation before the LM head
``lm_head``           the output embedding (may be tied to the input embedding)
``embed``             the input embedding
====================  =====================================================================

Weights are exchanged in the canonical layout ``[out_features, in_features]`` (``y = W x``). GPT-2's
``Conv1D`` stores ``[in, out]``; :meth:`ArchitectureAdapter.to_native` / :meth:`from_native` are the
only place that knows.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from typing import ClassVar, Literal, cast

import torch
from torch import nn

MatrixKind = Literal["mlp.out_proj", "mlp.in_proj", "attn.out_proj", "attn.in_proj"]
MATRIX_KINDS: tuple[MatrixKind, ...] = ("mlp.out_proj", "mlp.in_proj", "attn.out_proj", "attn.in_proj")
MatrixGroup = Literal["edited", "mlp", "attn", "all"]


@dataclass(frozen=True)
class MatrixInfo:
    """A weight matrix the monitors can track."""

    path: str  # module path, e.g. "model.layers.3.mlp.down_proj"
    layer: int
    kind: MatrixKind
    shape: tuple[int, int]  # canonical [out, in]

    @property
    def param_name(self) -> str:
        return f"{self.path}.weight"


class ArchitectureAdapter(ABC):
    """Canonical view of one model family. Subclasses fill in the class-level path templates."""

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    example_models: ClassVar[tuple[str, ...]] = ()
    layers_path: ClassVar[str]
    mlp_name: ClassVar[str]
    mlp_out_name: ClassVar[str]
    mlp_in_names: ClassVar[tuple[str, ...]]
    attn_name: ClassVar[str]
    attn_out_name: ClassVar[str]
    attn_in_names: ClassVar[tuple[str, ...]]
    final_norm_path: ClassVar[str]
    # Modules whose *output* is what the attention / MLP add to the residual stream. Families with a
    # norm after the sub-layer (Gemma) override these.
    attn_residual_name: ClassVar[str | None] = None
    mlp_residual_name: ClassVar[str | None] = None

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._modules = dict(model.named_modules())
        self._check_paths()

    # ----------------------------------------------------------------- structure
    @property
    def num_layers(self) -> int:
        return len(cast(nn.ModuleList, self.module(self.layers_path)))

    @property
    def hidden_size(self) -> int:
        return int(self.weight(self.mlp_out_proj(0)).shape[0])

    @property
    def mlp_hidden_size(self) -> int:
        return int(self.weight(self.mlp_out_proj(0)).shape[1])

    def parameter(self, path: str, name: str = "weight") -> torch.Tensor:
        """The module's tensor ``name`` in its native layout (``module(path).weight`` by default)."""
        tensor = getattr(self.module(path), name)
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{type(self).__name__}: '{path}.{name}' is not a tensor")
        return tensor

    def module(self, path: str) -> nn.Module:
        try:
            return self._modules[path]
        except KeyError:
            raise KeyError(f"{type(self).__name__}: the model has no module '{path}'") from None

    def _layer_path(self, layer: int) -> str:
        if not -self.num_layers <= layer < self.num_layers:
            raise IndexError(f"layer {layer} out of range: the model has {self.num_layers} layers")
        return f"{self.layers_path}.{layer % self.num_layers}"

    def block(self, layer: int) -> str:
        return self._layer_path(layer)

    def mlp(self, layer: int) -> str:
        return f"{self._layer_path(layer)}.{self.mlp_name}"

    def mlp_out_proj(self, layer: int) -> str:
        return f"{self._layer_path(layer)}.{self.mlp_out_name}"

    def mlp_in_projs(self, layer: int) -> list[str]:
        return [f"{self._layer_path(layer)}.{n}" for n in self.mlp_in_names]

    def attn(self, layer: int) -> str:
        return f"{self._layer_path(layer)}.{self.attn_name}"

    def attn_out_proj(self, layer: int) -> str:
        return f"{self._layer_path(layer)}.{self.attn_out_name}"

    def attn_in_projs(self, layer: int) -> list[str]:
        return [f"{self._layer_path(layer)}.{n}" for n in self.attn_in_names]

    def attn_residual(self, layer: int) -> str:
        """Module whose output is the attention's contribution to the residual stream."""
        return f"{self._layer_path(layer)}.{self.attn_residual_name or self.attn_name}"

    def mlp_residual(self, layer: int) -> str:
        """Module whose output is the MLP's contribution to the residual stream."""
        return f"{self._layer_path(layer)}.{self.mlp_residual_name or self.mlp_name}"

    def final_norm(self) -> str:
        return self.final_norm_path

    def mlp_value_change(self, layer: int, value: torch.Tensor, residual_change: torch.Tensor) -> torch.Tensor:
        """The change of the MLP out-projection's output ``value`` ([n, d]) that changes the MLP's residual
        contribution by ``residual_change``. Without a norm after the MLP the two are the same; families
        with one (Gemma) map it through that norm."""
        return residual_change

    def lm_head(self) -> str:
        return self._path_of(self.model.get_output_embeddings())  # type: ignore[operator]

    def embed(self) -> str:
        return self._path_of(self.model.get_input_embeddings())  # type: ignore[operator]

    def site(self, name: str, layer: int | None = None) -> str | list[str]:
        """Resolve a canonical site name (see the module docstring) to module path(s)."""
        per_layer = {
            "block": self.block,
            "mlp": self.mlp,
            "mlp.out_proj": self.mlp_out_proj,
            "mlp.in_proj": self.mlp_in_projs,
            "attn": self.attn,
            "attn.out_proj": self.attn_out_proj,
            "attn.in_proj": self.attn_in_projs,
        }
        global_sites = {"final_norm": self.final_norm, "lm_head": self.lm_head, "embed": self.embed}
        if name in per_layer:
            if layer is None:
                raise ValueError(f"site '{name}' needs a layer")
            paths = per_layer[name](layer)
            return paths if isinstance(paths, str) else list(paths)
        if name in global_sites:
            return global_sites[name]()
        raise ValueError(f"unknown site '{name}'; known: {sorted(per_layer) + sorted(global_sites)}")

    def tied_lm_head(self) -> bool:
        out = self.model.get_output_embeddings()  # type: ignore[operator]
        inp = self.model.get_input_embeddings()  # type: ignore[operator]
        return out is not None and out.weight is inp.weight

    # ----------------------------------------------------------------- matrices
    def matrices(self, group: MatrixGroup = "all", layers: list[int] | None = None) -> list[MatrixInfo]:
        """Trackable 2-D weight matrices. ``edited``: MLP output projections only."""
        kinds: dict[MatrixGroup, tuple[MatrixKind, ...]] = {
            "edited": ("mlp.out_proj",),
            "mlp": ("mlp.out_proj", "mlp.in_proj"),
            "attn": ("attn.out_proj", "attn.in_proj"),
            "all": MATRIX_KINDS,
        }
        if group not in kinds:
            raise ValueError(f"unknown matrix group '{group}'; choose one of {sorted(kinds)}")
        chosen = range(self.num_layers) if layers is None else layers
        infos: list[MatrixInfo] = []
        for layer in chosen:
            for kind in kinds[group]:
                paths = self.site(kind, layer)
                for path in [paths] if isinstance(paths, str) else paths:
                    w = self.weight(path)
                    infos.append(MatrixInfo(path, layer, kind, (int(w.shape[0]), int(w.shape[1]))))
        return infos

    def is_transposed(self, path: str) -> bool:
        """True where the stored weight is ``[in, out]`` (GPT-2's Conv1D)."""
        return type(self.module(path)).__name__ == "Conv1D"

    def weight(self, path: str) -> torch.Tensor:
        """The weight of ``path`` in canonical ``[out, in]`` layout (a view; do not modify in place)."""
        w = self.parameter(path)
        return w.T if self.is_transposed(path) else w

    def to_native(self, path: str, canonical: torch.Tensor) -> torch.Tensor:
        return canonical.T if self.is_transposed(path) else canonical

    def from_native(self, path: str, native: torch.Tensor) -> torch.Tensor:
        return native.T if self.is_transposed(path) else native

    @torch.no_grad()
    def add_to_weight(self, path: str, delta: torch.Tensor) -> torch.Tensor:
        """Add a canonical ``[out, in]`` delta to a weight in place; returns the delta in native layout."""
        param = self.parameter(path)
        native = self.to_native(path, delta).to(device=param.device, dtype=param.dtype)
        if native.shape != param.shape:
            raise ValueError(f"{path}: delta shape {tuple(delta.shape)} does not match weight {self.weight(path).shape}")
        param.add_(native)
        return native

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def hidden_from_output(output: object) -> torch.Tensor:
        """Decoder layers return a tensor (transformers >= 5) or a tuple whose first item is the hidden
        state (older versions); take the hidden state either way, never batch item 0 by accident."""
        if isinstance(output, torch.Tensor):
            return output
        if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
            return output[0]
        raise TypeError(f"cannot find the hidden state in a module output of type {type(output).__name__}")

    @staticmethod
    def replace_hidden(output: object, hidden: torch.Tensor) -> object:
        """Rebuild a module output with a new hidden state, preserving the output's structure."""
        if isinstance(output, torch.Tensor):
            return hidden
        if isinstance(output, tuple):
            return (hidden, *output[1:])
        if isinstance(output, list):
            return [hidden, *output[1:]]
        raise TypeError(f"cannot replace the hidden state in an output of type {type(output).__name__}")

    def _path_of(self, module: nn.Module | None) -> str:
        if module is None:
            raise ValueError(f"{type(self.model).__name__} has no such embedding module")
        for name, candidate in self._modules.items():
            if candidate is module:
                return name
        raise KeyError("module not found in the model")

    def _check_paths(self) -> None:
        for path in [self.layers_path, self.final_norm_path, self.mlp_out_proj(0), *self.mlp_in_projs(0)]:
            self.module(path)
        for path in [self.attn_out_proj(0), *self.attn_in_projs(0), self.mlp(0), self.attn(0)]:
            self.module(path)

    def describe(self) -> dict[str, object]:
        return {
            "family": self.family,
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "mlp_hidden_size": self.mlp_hidden_size,
            "edited_matrix": self.mlp_out_proj(0).replace(f"{self.layers_path}.0.", f"{self.layers_path}.{{l}}."),
            "tied_lm_head": self.tied_lm_head(),
        }
