"""Settings of a post-training intervention run (``seqedit intervene``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from seqedit.models.adapters.base import MATRIX_KINDS, MatrixKind

InterventionKind = Literal["continued-pretraining", "finetune", "lora"]
INTERVENTION_KINDS: tuple[InterventionKind, ...] = ("continued-pretraining", "finetune", "lora")

# What each kind trains on when `data` is not given, and its default learning rate.
DEFAULT_DATA: dict[str, str] = {"continued-pretraining": "wikitext2", "finetune": "sst2", "lora": "sst2"}
DEFAULT_LR: dict[str, float] = {"continued-pretraining": 1e-4, "finetune": 1e-4, "lora": 1e-3}


class InterventionConfig(BaseModel):
    """One training run whose weight norms are recorded as it goes."""

    model_config = ConfigDict(extra="forbid")

    kind: InterventionKind = Field(
        "continued-pretraining",
        description="continued-pretraining (LM loss on text), finetune (all weights, task answers) or lora "
        "(adapters on a task; merged weights are tracked).",
    )
    model: str = Field("smollm2-135m", description="Embedded name, hub id or local directory (see `seqedit models`).")
    dtype: str = Field("float32", description="Model dtype for training.")
    device: str | None = Field(None, description="Device; None picks CUDA, then MPS, then CPU.")
    data: str | None = Field(
        None,
        description="wikitext2 | sst2 | cola | mrpc | rte | a .txt file (text) | a .json task file "
        "(GLUE-style records); None: wikitext2 for continued-pretraining, sst2 otherwise.",
    )
    steps: int = Field(50, ge=1, description="Optimiser steps.")
    lr: float | None = Field(None, gt=0, description="AdamW learning rate; None: 1e-4 (full) / 1e-3 (lora).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay (0: none).")
    grad_clip: float | None = Field(1.0, gt=0, description="Clip the gradient norm to this (None: no clip).")
    batch_size: int = Field(4, ge=1, description="Text chunks or task examples per optimiser step.")
    seq_len: int = Field(64, ge=8, description="Tokens per text chunk / maximum task example length.")
    record_every: int = Field(10, ge=1, description="Record norms and held-out loss every this many steps.")
    save_every: int = Field(
        50, ge=0,
        description="Save the training state (trained weights, AdamW moments, norm monitor) at the first "
        "record (record_every) at least this many steps after the last save, so that an interrupted run "
        "resumes exactly; 0: never (an interrupted run starts again).",
    )
    eval_batches: int = Field(2, ge=1, description="Held-out batches of the recorded eval_loss.")
    lora_rank: int = Field(8, ge=1, description="LoRA rank r (kind lora).")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA alpha; the update is (alpha / r) · B A (kind lora).")
    lora_kinds: list[MatrixKind] = Field(list(MATRIX_KINDS), min_length=1, description="Matrix kinds given adapters.")
    lora_layers: list[int] | None = Field(None, description="Layers given adapters; None: all.")
    spectral: bool = Field(
        False, description="Also estimate spectral norms (the norm monitor's warm-started block power iteration)."
    )
    output_dir: Path = Field(Path("runs/intervention"), description="Run directory (created).")
    seed: int = Field(0, description="Seed of torch (LoRA's initialisation), the data order and the held-out split.")

    def resolved(self) -> InterventionConfig:
        """A copy with every default filled in (what config.yaml records)."""
        return self.model_copy(
            update={
                "data": self.data or DEFAULT_DATA[self.kind],
                "lr": self.lr if self.lr is not None else DEFAULT_LR[self.kind],
            }
        )
