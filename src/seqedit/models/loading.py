"""Load any Hugging Face causal LM (hub id, local directory, or an embedded model) with its adapter."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationMixin,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from seqedit.errors import UserError
from seqedit.models.adapters import ArchitectureAdapter, adapter_for
from seqedit.models.embedded import EMBEDDED_MODELS, convert_to_cache
from seqedit.settings import get_settings
from seqedit.utils.torch_utils import resolve_device, resolve_dtype

DEFAULT_MODEL = "smollm2-135m"


class ModelLoadError(UserError, RuntimeError):
    """A model could not be loaded; the message says why and what to do."""


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer and its architecture adapter."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    adapter: ArchitectureAdapter
    name: str  # what the user asked for ("smollm2-135m", "gpt2-xl", a path)
    source: str = ""  # where the weights came from
    info: dict[str, str] = field(default_factory=dict)

    @property
    def pretrained(self) -> PreTrainedModel:
        """The model as a transformers ``PreTrainedModel`` (what ``load`` returns), for ``generate`` and
        ``save_pretrained``, which ``nn.Module`` does not declare."""
        return cast(PreTrainedModel, self.model)

    @property
    def generator(self) -> GenerationMixin:
        """The model for ``generate`` (every causal LM that ``load`` returns is one)."""
        return cast(GenerationMixin, self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve_source(name_or_path: str, *, cache_dir: Path | None = None, allow_opt_in: bool = True) -> tuple[str, str]:
    """Return ``(kind, location)`` where kind is 'embedded', 'local' or 'hub'."""
    settings = get_settings()
    if name_or_path in EMBEDDED_MODELS:
        entry = EMBEDDED_MODELS[name_or_path]
        if entry.opt_in and not allow_opt_in:
            raise ModelLoadError(f"'{name_or_path}' is opt-in ({entry.licence}); ask for it explicitly")
        models_cache = (cache_dir or settings.cache_dir) / "models"
        try:
            return "embedded", str(convert_to_cache(entry, models_cache, log=_log))
        except RuntimeError as exc:
            raise ModelLoadError(str(exc)) from exc
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return "local", str(path)
    if path.exists():
        raise ModelLoadError(f"{path} is a file; pass the model's directory (with config.json and *.safetensors)")
    if _looks_like_hub_id(name_or_path) or name_or_path in {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"}:
        return "hub", name_or_path
    known = ", ".join(sorted(EMBEDDED_MODELS))
    raise ModelLoadError(
        f"unknown model '{name_or_path}': not an embedded model ({known}), not an existing directory, "
        "and not a Hugging Face hub id of the form 'org/name'"
    )


TINY_PREFIX = "tiny-"


def _load_tiny(name: str, dtype: str | torch.dtype, device: str | torch.device | None) -> LoadedModel:
    """``tiny-<family>``: the randomly initialised test model of that family (seed 0): a model name that
    runs, studies and the CLI accept, for smoke tests without any download."""
    from seqedit.models.tiny import TINY_FAMILIES, build_tiny_model

    family = name[len(TINY_PREFIX):]
    if family not in TINY_FAMILIES:
        raise ModelLoadError(f"unknown tiny model '{name}'; choose one of {', '.join('tiny-' + f for f in TINY_FAMILIES)}")
    return build_tiny_model(family, dtype=resolve_dtype(dtype), device=resolve_device(device))  # type: ignore[arg-type]


def _check_local_dir(path: Path) -> None:
    if not (path / "config.json").exists():
        raise ModelLoadError(f"{path} has no config.json: not a Hugging Face model directory")
    if not any(path.glob("*.safetensors")):
        raise ModelLoadError(
            f"{path} has no *.safetensors weights. seqedit loads only safetensors (pickled .bin files can run "
            "code); convert them once with transformers' save_pretrained(..., safe_serialization=True)"
        )


def load(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device | None = "cpu",
    trust_remote_code: bool = False,
    revision: str | None = None,
    cache_dir: Path | None = None,
    offline: bool | None = None,
) -> LoadedModel:
    """Load a causal LM in eval mode with its tokenizer and architecture adapter.

    ``name_or_path``: an embedded model (``smollm2-135m``, ``gemma3-270m``), a local directory, a hub id, or
    ``tiny-<family>`` (a random test model).
    ``device=None`` or ``"auto"`` picks the best available accelerator.
    """
    if name_or_path.startswith(TINY_PREFIX):
        return _load_tiny(name_or_path, dtype, device)
    settings = get_settings()
    offline = settings.offline if offline is None else offline
    kind, location = resolve_source(name_or_path, cache_dir=cache_dir)
    if kind == "local":
        _check_local_dir(Path(location))
    torch_dtype = resolve_dtype(dtype)
    target_device = resolve_device(device)
    kwargs: dict[str, object] = {
        "trust_remote_code": trust_remote_code,
        "local_files_only": offline or kind != "hub",
    }
    if revision:
        kwargs["revision"] = revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype, use_safetensors=True, **kwargs)
    except OSError as exc:
        hint = (
            "the Hugging Face hub could not be reached or the files are not in the local cache"
            if kind == "hub"
            else "the directory could not be read as a model"
        )
        raise ModelLoadError(f"could not load '{name_or_path}' ({hint}): {exc}") from exc
    model.to(target_device)  # type: ignore[arg-type]  # transformers declares PreTrainedModel.to through a wrapper
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        adapter = adapter_for(model)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        adapter=adapter,
        name=name_or_path,
        source=f"{kind}:{location}",
        info={"kind": kind, "model_type": str(model.config.model_type)},
    )
