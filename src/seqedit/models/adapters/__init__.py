"""Architecture adapters (one per model family) and the lookup by ``config.model_type``."""

from __future__ import annotations

from torch import nn

from seqedit.models.adapters.base import MATRIX_KINDS, ArchitectureAdapter, MatrixInfo, MatrixKind
from seqedit.models.adapters.families import (
    ADAPTERS,
    Gemma3Adapter,
    GPT2Adapter,
    GPTJAdapter,
    GPTNeoXAdapter,
    LlamaAdapter,
)


def adapter_class_for(model_type: str) -> type[ArchitectureAdapter]:
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls
    known = sorted(t for cls in ADAPTERS for t in cls.model_types)
    raise ValueError(
        f"no architecture adapter for model_type '{model_type}'. Supported model types: {', '.join(known)}. "
        "A new family needs a small ArchitectureAdapter subclass (see seqedit/models/adapters/families.py)."
    )


def adapter_for(model: nn.Module) -> ArchitectureAdapter:
    """Build the adapter matching ``model.config.model_type``."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise ValueError(f"{type(model).__name__} has no config.model_type; pass an adapter explicitly")
    return adapter_class_for(model_type)(model)


__all__ = [
    "ADAPTERS",
    "MATRIX_KINDS",
    "ArchitectureAdapter",
    "GPT2Adapter",
    "GPTJAdapter",
    "GPTNeoXAdapter",
    "Gemma3Adapter",
    "LlamaAdapter",
    "MatrixInfo",
    "MatrixKind",
    "adapter_class_for",
    "adapter_for",
]
