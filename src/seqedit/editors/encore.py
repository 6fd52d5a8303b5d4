"""ENCORE (Gupta et al. 2025, "Lifelong Knowledge Editing requires Better Regularization", arXiv
2502.01636): MEMIT's objective with an explicit Frobenius-norm penalty on the update, plus most-probable
early stopping (MPES) of the target optimisation.

    ΔW = argmin ‖(W+Δ)K - V‖² + λ_p‖Δ K_0‖² + ‖Δ K_p‖² + λ_n‖Δ‖²  =  R Kᵀ (λ_p C + K_p K_pᵀ + K Kᵀ + λ_n I)⁻¹

Defaults follow the authors' released settings (``hparams/ENCORE``): λ_n = 20 and MPES patience 2 for
Llama-3-8B, λ_n = 10 and patience 4 for GPT2-XL, with past-edit memory on; for the embedded model λ_n is
chosen by the measurement in docs/editors.md.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from seqedit.editors.base import EditorConfig
from seqedit.editors.memit import MEMIT, MEMITConfig


class ENCOREConfig(MEMITConfig):
    mpes: bool = Field(True, description="Most-probable early stopping (ENCORE).")
    norm_lambda: float = Field(20.0, ge=0, description="λ_n of the Frobenius-norm penalty λ_n‖ΔW‖².")


class ENCORE(MEMIT):
    name = "encore"
    config_class: ClassVar[type[EditorConfig]] = ENCOREConfig
    description = "ENCORE: MEMIT + Frobenius-norm penalty + most-probable early stopping (Gupta et al. 2025)"
    intended_batch_mode = "batch"
