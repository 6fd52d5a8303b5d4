"""Monitors, read-only on the model: weight norms after every step, activation drift at checkpoints."""

from seqedit.monitor.activations import (
    ActivationMonitor,
    ActivationReport,
    LayerDrift,
    LayerFloor,
    LayerShare,
)
from seqedit.monitor.norms import (
    MatrixNorms,
    NormMonitor,
    NormProfile,
    NormSnapshot,
    WeightChanges,
    block_power_iteration,
)
from seqedit.monitor.probes import BUILTIN_PROBE_PROMPTS, ProbeSet, build_probe_set
from seqedit.monitor.similarity import linear_cka, paired_cosine, principal_angles

__all__ = [
    "BUILTIN_PROBE_PROMPTS",
    "ActivationMonitor",
    "ActivationReport",
    "LayerDrift",
    "LayerFloor",
    "LayerShare",
    "MatrixNorms",
    "NormMonitor",
    "NormProfile",
    "NormSnapshot",
    "ProbeSet",
    "WeightChanges",
    "block_power_iteration",
    "build_probe_set",
    "linear_cka",
    "paired_cosine",
    "principal_angles",
]
