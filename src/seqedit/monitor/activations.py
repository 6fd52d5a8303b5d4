"""Activation drift at checkpoints: how far the edited model's internal activations moved from the
unedited model's, on a fixed probe set.

Per layer ``l`` and probe token (the first token of each probe is skipped by default: in many LMs its
activations are outliers of huge norm -- an "attention sink" -- that would dominate every statistic):

* ``mlp_out_norm_rel`` -- mean token norm of the edited module's output (``adapter.mlp_out_proj(l)``)
  divided by the unedited model's; ``residual_norm_rel`` -- the same for the residual stream after the
  block (``adapter.block(l)``).
* ``principal_angle_mean_deg`` / ``principal_angle_max_deg`` -- principal angles between the top-``k``
  PCA subspaces of the token activations now and before editing; ``cka`` -- linear CKA; ``cosine`` --
  mean cosine between paired activations (same probe, same token). Each for both sites above (``scope``
  names the site: ``mlp.out_proj`` or ``block``).
* ``energy_outside_topk`` -- share of the activations' (centred) energy outside the unedited model's
  top-``k`` PCA subspace: how much of the activity now lies in directions the unedited model barely used.
* Noise floors, at step 0 only (names ending in ``_floor``): the same statistics between two disjoint
  halves of the probe set (even and odd probes) on the unedited model -- principal angles, the norm ratio
  and the energy outside -- so that a drift can be read as "n times what a different probe sample gives".
  CKA and the cosine compare paired tokens and have no such unpaired floor.
* ``attn_share`` / ``mlp_share`` -- each sub-layer's share of the residual-stream update,
  ``mean‖a_t‖ / (mean‖a_t‖ + mean‖m_t‖)`` with ``a``/``m`` the outputs of ``adapter.attn_residual(l)`` /
  ``adapter.mlp_residual(l)`` (scope ``residual_update``).

The unedited activations are captured once (:meth:`ActivationMonitor.baseline`) and kept on the CPU;
they are part of :meth:`ActivationMonitor.state_dict`, so a resumed run compares against the same baseline.
Memory: ``2 × layers × tokens × hidden`` floats (SmolLM2-135M, 30 layers, ~600 tokens: ~80 MB).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from seqedit.models.hooks import capture
from seqedit.models.loading import LoadedModel
from seqedit.monitor.similarity import (
    angles_between_subspaces,
    energy_outside,
    linear_cka,
    mean_row_norm,
    paired_cosine,
    pca_basis,
)
from seqedit.utils.rows import CheckpointRow, checkpoint_row

# Sites whose activations are compared token by token against the baseline, and the row name of each
# site's relative norm.
DRIFT_SITES: dict[str, str] = {"mlp.out_proj": "mlp_out_norm_rel", "block": "residual_norm_rel"}
SHARE_SCOPE = "residual_update"


@dataclass(frozen=True)
class LayerDrift:
    """Drift of one layer's activations at one site."""

    layer: int
    site: str
    norm_rel: float
    angle_mean_deg: float
    angle_max_deg: float
    cka: float
    cosine: float
    energy_outside: float


@dataclass(frozen=True)
class LayerFloor:
    """Noise floor of one layer's drift statistics at one site: half the probes against the other half."""

    layer: int
    site: str
    norm_ratio: float
    angle_mean_deg: float
    angle_max_deg: float
    energy_outside: float


@dataclass(frozen=True)
class LayerShare:
    layer: int
    attn_share: float
    mlp_share: float


@dataclass(frozen=True)
class ActivationReport:
    """One checkpoint's activation measurements; :meth:`rows` gives ``checkpoints.jsonl`` rows."""

    drift: tuple[LayerDrift, ...]
    shares: tuple[LayerShare, ...]
    top_k: int
    n_tokens: int
    n_probes: int
    floors: tuple[LayerFloor, ...] = ()

    def rows(self) -> list[CheckpointRow]:
        probes = f"probes={self.n_probes},tokens={self.n_tokens}"
        rows: list[CheckpointRow] = []
        halves = f"unedited, even vs odd probes ({probes})"
        for f in self.floors:
            for name, value, definition in (
                (f"{DRIFT_SITES[f.site]}_floor", f.norm_ratio, f"mean token L2 norm, odd / even probes, {halves}"),
                ("principal_angle_mean_deg_floor", f.angle_mean_deg, f"principal angles, top-{self.top_k}, mean, {halves}"),
                ("principal_angle_max_deg_floor", f.angle_max_deg, f"principal angles, top-{self.top_k}, max, {halves}"),
                ("energy_outside_topk_floor", f.energy_outside, f"energy of odd probes outside even probes' top-{self.top_k}, {halves}"),
            ):
                rows.append(checkpoint_row("activation", name, value, scope=f.site, layer=f.layer, definition=definition))
        for d in self.drift:
            pairs = [
                (DRIFT_SITES[d.site], d.norm_rel, f"mean token L2 norm / unedited ({probes})"),
                (
                    "principal_angle_mean_deg",
                    d.angle_mean_deg,
                    f"principal angles, top-{self.top_k} PCA subspaces vs unedited, mean ({probes})",
                ),
                (
                    "principal_angle_max_deg",
                    d.angle_max_deg,
                    f"principal angles, top-{self.top_k} PCA subspaces vs unedited, max ({probes})",
                ),
                ("cka", d.cka, f"linear CKA vs unedited, paired tokens ({probes})"),
                ("cosine", d.cosine, f"mean cosine of paired token activations vs unedited ({probes})"),
                (
                    "energy_outside_topk",
                    d.energy_outside,
                    f"share of centred energy outside the unedited top-{self.top_k} PCA subspace ({probes})",
                ),
            ]
            for name, value, definition in pairs:
                rows.append(
                    checkpoint_row(
                        "activation", name, value, scope=d.site, layer=d.layer, definition=definition
                    )
                )
        for s in self.shares:
            definition = f"mean‖out‖ / (mean‖attn out‖ + mean‖mlp out‖) ({probes})"
            rows.append(
                checkpoint_row(
                    "activation",
                    "attn_share",
                    s.attn_share,
                    scope=SHARE_SCOPE,
                    layer=s.layer,
                    definition=definition,
                )
            )
            rows.append(
                checkpoint_row(
                    "activation",
                    "mlp_share",
                    s.mlp_share,
                    scope=SHARE_SCOPE,
                    layer=s.layer,
                    definition=definition,
                )
            )
        return rows


def _share(a_norm: float, m_norm: float) -> tuple[float, float]:
    total = a_norm + m_norm
    if total == 0:
        return float("nan"), float("nan")
    return a_norm / total, m_norm / total


class ActivationMonitor:
    """Compares activations on a fixed probe set against the unedited model's.

    Call :meth:`baseline` on the unedited model (it stores the baseline and returns the step-0 report),
    then :meth:`measure` at each checkpoint. A resumed run calls :meth:`load_state_dict` instead of
    :meth:`baseline`.
    """

    def __init__(
        self,
        lm: LoadedModel,
        probes: Sequence[str],
        *,
        layers: Sequence[int] | None = None,
        top_k: int = 8,
        max_length: int = 64,
        batch_size: int = 8,
        skip_first_token: bool = True,
        show_progress: bool = False,
    ) -> None:
        if not probes:
            raise ValueError("the activation monitor needs at least one probe text")
        self.lm = lm
        self.probes = tuple(probes)
        n_layers = lm.adapter.num_layers
        outside = [int(layer) for layer in layers or [] if not -n_layers <= int(layer) < n_layers]
        if outside:  # a modulo would silently measure another layer (99 -> 3 on a 4-layer model)
            raise ValueError(f"probe layer(s) {outside} out of range; the model has {n_layers} layers")
        self.layers = list(range(n_layers)) if layers is None else [int(layer) % n_layers for layer in layers]
        if not self.layers:
            raise ValueError("no layers to monitor")
        self.top_k = top_k
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.probe_ids, self.probe_mask, self.token_mask = self._encode(max_length, skip_first_token)
        self.n_tokens = int(self.token_mask.sum())
        if not 1 <= top_k <= min(self.n_tokens - 1, lm.adapter.hidden_size):
            raise ValueError(
                f"top_k={top_k} must be between 1 and min(tokens-1, hidden) = "
                f"{min(self.n_tokens - 1, lm.adapter.hidden_size)}; add probes or lower top_k"
            )
        self._baseline: dict[tuple[str, int], torch.Tensor] = {}
        self._bases: dict[tuple[str, int], torch.Tensor] = {}
        self._baseline_norms: dict[tuple[str, int], float] = {}

    # ----------------------------------------------------------------- encoding and capture
    def _encode(
        self, max_length: int, skip_first_token: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tok = self.lm.tokenizer
        rows = [list(tok(text)["input_ids"])[:max_length] for text in self.probes]
        if any(len(r) < 2 for r in rows):
            raise ValueError("every probe must tokenise to at least two tokens")
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        tokens = mask.bool().clone()
        if skip_first_token:
            tokens[:, 0] = False
        return ids, mask, tokens

    def _site_modules(self) -> dict[str, torch.nn.Module]:
        a = self.lm.adapter
        modules: dict[str, torch.nn.Module] = {}
        for layer in self.layers:
            modules[f"mlp.out_proj/{layer}"] = a.module(a.mlp_out_proj(layer))
            modules[f"block/{layer}"] = a.module(a.block(layer))
            modules[f"attn/{layer}"] = a.module(a.attn_residual(layer))
            modules[f"mlp/{layer}"] = a.module(a.mlp_residual(layer))
        return modules

    @torch.no_grad()
    def _capture(self) -> dict[str, torch.Tensor]:
        """Selected-token activations ``[n_tokens, d]`` (CPU, float32) per ``site/layer`` key."""
        device = self.lm.device
        collected: dict[str, list[torch.Tensor]] = {}
        starts = range(0, len(self.probes), self.batch_size)
        with capture(self._site_modules(), "output") as store:
            for start in tqdm(starts, desc="activation probes", disable=not self.show_progress, leave=False):
                stop = start + self.batch_size
                mask = self.probe_mask[start:stop]
                width = int(mask.sum(1).max())
                self.lm.model(
                    input_ids=self.probe_ids[start:stop, :width].to(device),
                    attention_mask=mask[:, :width].to(device),
                )
                keep = self.token_mask[start:stop, :width].to(device)
                for key, hidden in store.items():
                    collected.setdefault(key, []).append(hidden[keep].to("cpu", torch.float32))
                store.clear()
        return {key: torch.cat(parts) for key, parts in collected.items()}

    def _math_device(self) -> torch.device:
        device = self.lm.device
        return torch.device("cpu") if device.type == "mps" else device  # float64 math

    # ----------------------------------------------------------------- measuring
    def baseline(self) -> ActivationReport:
        """Capture and store the unedited model's activations; returns the step-0 report."""
        acts = self._capture()
        self._baseline = {
            (site, layer): acts[f"{site}/{layer}"] for site in DRIFT_SITES for layer in self.layers
        }
        self._prepare_baseline()
        report = self._report(acts)
        return ActivationReport(report.drift, report.shares, report.top_k, report.n_tokens, report.n_probes,
                                self.noise_floors())

    def _probe_of_token(self) -> torch.Tensor:
        """Probe index of every selected token, in the order of the captured rows (row-major)."""
        return torch.nonzero(self.token_mask, as_tuple=True)[0]

    def noise_floors(self) -> tuple[LayerFloor, ...]:
        """The drift statistics between the even and the odd probes on the unedited model."""
        if not self._baseline:
            raise RuntimeError("ActivationMonitor.noise_floors() before baseline() or load_state_dict()")
        even = self._probe_of_token() % 2 == 0
        if min(int(even.sum()), int((~even).sum())) <= self.top_k:
            return ()  # too few tokens in a half for a top-k subspace
        device = self._math_device()
        floors: list[LayerFloor] = []
        for (site, layer), x in self._baseline.items():
            a, b = x[even].to(device), x[~even].to(device)
            basis_a = pca_basis(a, self.top_k)
            angles = angles_between_subspaces(basis_a, pca_basis(b, self.top_k))
            floors.append(LayerFloor(layer, site, mean_row_norm(b) / mean_row_norm(a), float(angles.mean()),
                                     float(angles.max()), energy_outside(b, basis_a)))
        return tuple(sorted(floors, key=lambda f: (f.layer, f.site)))

    def _prepare_baseline(self) -> None:
        device = self._math_device()
        self._bases = {key: pca_basis(x.to(device), self.top_k) for key, x in self._baseline.items()}
        self._baseline_norms = {key: mean_row_norm(x) for key, x in self._baseline.items()}

    def measure(self) -> ActivationReport:
        """Activation drift of the model as it is now."""
        if not self._baseline:
            raise RuntimeError("ActivationMonitor.measure() before baseline() or load_state_dict()")
        return self._report(self._capture())

    def _report(self, acts: Mapping[str, torch.Tensor]) -> ActivationReport:
        device = self._math_device()
        drift: list[LayerDrift] = []
        shares: list[LayerShare] = []
        for layer in self.layers:
            for site in DRIFT_SITES:
                now = acts[f"{site}/{layer}"].to(device)
                before = self._baseline[(site, layer)].to(device)
                angles = angles_between_subspaces(self._bases[(site, layer)], pca_basis(now, self.top_k))
                base_norm = self._baseline_norms[(site, layer)]
                drift.append(
                    LayerDrift(
                        layer=layer,
                        site=site,
                        norm_rel=mean_row_norm(now) / base_norm if base_norm > 0 else float("nan"),
                        angle_mean_deg=float(angles.mean()),
                        angle_max_deg=float(angles.max()),
                        cka=linear_cka(now, before),
                        cosine=paired_cosine(now, before),
                        energy_outside=energy_outside(now, self._bases[(site, layer)]),
                    )
                )
            attn, mlp = _share(mean_row_norm(acts[f"attn/{layer}"]), mean_row_norm(acts[f"mlp/{layer}"]))
            shares.append(LayerShare(layer, attn, mlp))
        return ActivationReport(tuple(drift), tuple(shares), self.top_k, self.n_tokens, len(self.probes))

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self._baseline:
            raise RuntimeError("ActivationMonitor.state_dict() before baseline()")
        state = {"probe_ids": self.probe_ids.clone(), "token_mask": self.token_mask.clone()}
        for (site, layer), x in self._baseline.items():
            state[f"baseline/{site}/{layer}"] = x.clone()
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for key, mine in (("probe_ids", self.probe_ids), ("token_mask", self.token_mask)):
            if key not in state or not torch.equal(state[key].to(mine.dtype), mine):
                raise ValueError(
                    f"activation monitor state was made with a different probe set ({key} differs)"
                )
        baseline: dict[tuple[str, int], torch.Tensor] = {}
        for site in DRIFT_SITES:
            for layer in self.layers:
                key = f"baseline/{site}/{layer}"
                if key not in state:
                    raise ValueError(f"activation monitor state lacks '{key}' (monitored layers differ?)")
                tensor = state[key]
                if tensor.shape[0] != self.n_tokens:
                    raise ValueError(f"'{key}' holds {tensor.shape[0]} tokens, the probe set {self.n_tokens}")
                baseline[(site, layer)] = tensor.to("cpu", torch.float32).clone()
        self._baseline = baseline
        self._prepare_baseline()
