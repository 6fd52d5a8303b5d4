"""The pipeline every locate-and-edit method shares; a method only supplies its per-layer solve.

For a group of facts (the whole batch, or one fact at a time for ROME):

1. **statistics** -- ``E[k kᵀ]`` at the edited layers (:mod:`seqedit.editors.covariance`, cached);
2. **targets** -- the target hidden state ``z`` after the last edited layer ``L`` for every fact
   (:mod:`seqedit.editors.targets`: MEMIT's optimisation, optionally with MPES, batched);
3. **solve** -- for each edited layer ``l`` in increasing order (MEMIT, Meng et al. 2023, Alg. 1): the
   context-averaged keys ``K_l`` and the bare-prompt hidden state ``h`` after ``L`` on the current
   (partly edited) model, the residual ``R = (z - h) / (layers left)``, the method's update ``Δ_l`` from
   ``(K_l, R)``, written at once so the next layer sees it.

Stateful pieces live on the editor instance: the Gram matrix ``Σ k kᵀ`` of past edits' keys per layer
(MEMIT's sequential memory, AlphaEdit's accumulated keys), saved and restored by ``state_dict``. The weights
are written through :func:`~seqedit.editors.base.commit_deltas` so the returned ``EditResult`` holds the
exact delta of every changed matrix; a failing edit restores every weight it touched.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator

from seqedit.data.records import EditRequest
from seqedit.editors.base import EditError, Editor, EditorConfig, EditResult, PhaseTimer, commit_deltas
from seqedit.editors.context import ContextMode, ContextTemplates, make_context_templates
from seqedit.editors.covariance import DEFAULT_CORPUS, SecondMoment, second_moments
from seqedit.editors.keys import KeyAverage, keys_and_hidden
from seqedit.editors.profiles import LOCATE_AND_EDIT
from seqedit.editors.solvers import solve_device
from seqedit.editors.stabilisers import (
    StabiliserSettings,
    StabiliserState,
    mlp_outputs,
    nas_targets,
    stabilise_weights,
    trimmed_mean,
)
from seqedit.editors.targets import MpesRule, TargetSettings, optimise_targets
from seqedit.models.adapters.base import ArchitectureAdapter
from seqedit.models.loading import LoadedModel
from seqedit.utils.torch_utils import resolve_dtype


class LocateEditConfig(StabiliserSettings):
    """Settings shared by ROME, MEMIT, EMMET, AlphaEdit and ENCORE (MEMIT's names where they exist), and the
    stabilisers that compose with all of them (:mod:`seqedit.editors.stabilisers`)."""

    layers: list[int] | None = Field(
        None, description="Edited layers (0-based). None: chosen from the model's depth (see docs/editors.md)."
    )
    # ---- target optimisation
    v_lr: float = Field(0.5, gt=0, description="Adam learning rate of the target optimisation.")
    v_num_grad_steps: int = Field(25, ge=1, description="Forward passes of the target optimisation (at most).")
    v_weight_decay: float = Field(0.5, ge=0, description="Weight of ‖δ‖/‖h‖² in the target loss.")
    kl_factor: float = Field(0.0625, ge=0, description="Weight of the KL term on '{subject} is a'.")
    clamp_norm_factor: float = Field(0.75, gt=0, description="‖δ‖ is clamped to this times ‖h‖.")
    v_loss_threshold: float = Field(5e-2, ge=0, description="Stop when the target loss falls below this.")
    mpes: bool = Field(False, description="Most-probable early stopping (ENCORE).")
    mpes_patience: int = Field(2, ge=1, description="MPES: stop after this many passes with the target top-1.")
    mpes_rule: MpesRule = Field(
        "all_prompts",
        description="MPES: 'all_prompts' counts a pass when the target is top-1 on every rewriting prompt; "
        "'released' skips the bare prompt as ENCORE's released code does (it stops earlier).",
    )
    batch_targets: bool = Field(True, description="Optimise the targets of a batch together (same result).")
    target_batch_facts: int = Field(16, ge=1, description="Facts per batched target optimisation (memory).")
    target_suffix_only: bool = Field(
        True,
        description="Target optimisation recomputes only the positions from the subject's last token on, "
        "with the earlier ones' keys/values cached (same result, faster: suffix_speedup_cpu in "
        "benchmarks/results/editors.json); False: every position.",
    )
    kl_prompt: str = Field("{} is a", description="Prompt of the KL term; '{}' is the subject.")
    key_average: KeyAverage = Field(
        "bare_half",
        description="Keys averaged over context templates: 'bare_half' (MEMIT: bare prompt and mean of the "
        "prefixed ones, half each) or 'mean' (ROME/r-ROME: plain mean over all templates).",
    )
    # ---- context prefixes
    context_mode: ContextMode = Field(
        "fixed",
        description="Context prefixes: fixed readable ones, sampled from the model (context_length new "
        "tokens), released (sampled as the released MEMIT code: context_length tokens in total), or none.",
    )
    context_count: int = Field(5, ge=0, le=8, description="Number of context prefixes.")
    context_length: int = Field(
        10, ge=1, description="Tokens per sampled prefix (new tokens; 'released': in total, seed included)."
    )
    # ---- key statistics
    mom2_corpus: str = Field(DEFAULT_CORPUS, description="Corpus of E[kkᵀ]: wikitext2 (falls back to builtin-prose without a data directory), builtin-prose, generated (sampled from the model), builtin or a .txt path.")
    mom2_n_samples: int = Field(300, ge=1, description="Corpus paragraphs used for E[kkᵀ] (papers: 1e4-1e5).")
    mom2_max_length: int = Field(256, ge=2, description="Tokens per paragraph (longer ones are cut).")
    mom2_dtype: Literal["float32", "float64"] = Field("float32", description="Precision of kᵀk products.")
    mom2_token_budget: int = Field(4096, ge=2, description="Padded tokens per statistics batch.")
    # ---- solve
    norm_lambda: float = Field(0.0, ge=0, description="λ_n of the Frobenius-norm penalty λ_n‖ΔW‖² (ENCORE).")
    past_edit_memory: bool = Field(
        True, description="Preserve the keys of earlier edits (sequential editing with memory)."
    )
    memory_dtype: Literal["float32", "float64"] = Field("float32", description="Precision of the key memory.")

    @field_validator("layers")
    @classmethod
    def _sorted_layers(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not value or any(layer < 0 for layer in value) or len(set(value)) != len(value):
            raise ValueError("layers must be distinct non-negative layer indices")
        return sorted(value)

    @field_validator("kl_prompt")
    @classmethod
    def _kl_prompt_has_slot(cls, value: str) -> str:
        if value.count("{}") != 1:
            raise ValueError("kl_prompt must contain '{}' exactly once")
        return value


class PreservingConfig(LocateEditConfig):
    """Methods that preserve ``λ_p·E[k kᵀ]`` in a least-squares or equality-constrained objective."""

    mom2_update_weight: float = Field(15000.0, gt=0, description="λ_p: weight of E[kkᵀ] in the objective.")


# ---------------------------------------------------------------------------------------------- defaults
# Per-model defaults live in one table, seqedit.editors.profiles; what is left here is the generic rule.
def auto_layers(num_layers: int, count: int = 5) -> list[int]:
    """``count`` consecutive layers starting at depth N/8 (Llama-3-8B: 4-8), at most N/2 of them."""
    count = max(1, min(count, num_layers // 2))
    start = max(1, num_layers // 8) if num_layers > 2 else 0
    start = min(start, num_layers - count)
    return list(range(start, start + count))


# ---------------------------------------------------------------------------------------------- editing
UPPER_TRIANGLE = ".upper"


def _packed_gram(key: str, gram: torch.Tensor) -> dict[str, torch.Tensor]:
    """A state entry for a Gram matrix ``Σ k kᵀ``: its upper triangle when the matrix is exactly symmetric
    (it is in practice, and then it takes half the disk), else the whole matrix."""
    if gram.dim() == 2 and gram.shape[0] == gram.shape[1] and torch.equal(gram, gram.T):
        rows, cols = torch.triu_indices(gram.shape[0], gram.shape[0])
        return {key + UPPER_TRIANGLE: gram[rows, cols].contiguous()}
    return {key: gram}


def _unpacked_gram(key: str, upper: torch.Tensor) -> torch.Tensor:
    """The symmetric matrix whose upper triangle :func:`_packed_gram` stored, bit for bit."""
    size = int((math.isqrt(8 * upper.numel() + 1) - 1) // 2)
    if upper.dim() != 1 or size * (size + 1) // 2 != upper.numel():
        raise ValueError(f"state entry {key} is not the upper triangle of a square matrix")
    rows, cols = torch.triu_indices(size, size)
    gram = torch.empty(size, size, dtype=upper.dtype)
    gram[rows, cols] = upper
    gram[cols, rows] = upper
    return gram


class _WeightWriter:
    """Writes accumulated canonical deltas so later layers and facts see earlier updates; restores the
    originals on failure; at the end commits the totals through ``commit_deltas`` (exact undo/replay)."""

    def __init__(self, adapter: ArchitectureAdapter) -> None:
        self.adapter = adapter
        self.originals: dict[str, torch.Tensor] = {}
        self.totals: dict[str, torch.Tensor] = {}

    def _stored_weight(self, path: str) -> torch.Tensor:
        weight = self.adapter.module(path).weight
        if not isinstance(weight, torch.Tensor):
            raise EditError(f"{path}.weight is not a tensor")
        return weight

    @torch.no_grad()
    def add(self, path: str, delta: torch.Tensor) -> None:
        if not torch.isfinite(delta).all():
            raise EditError(f"the update of {path} contains NaN or Inf")
        param = self._stored_weight(path)
        if path not in self.originals:
            self.originals[path] = param.detach().clone()
            self.totals[path] = torch.zeros_like(delta)
        self.totals[path] += delta
        native = self.adapter.to_native(path, self.totals[path]).to(device=param.device, dtype=param.dtype)
        param.copy_(self.originals[path] + native)

    @torch.no_grad()
    def restore(self) -> None:
        for path, original in self.originals.items():
            self._stored_weight(path).copy_(original)

    def commit(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        self.restore()
        return commit_deltas(self.adapter, self.totals)

    def precise(self) -> dict[str, torch.Tensor]:
        """The float64 totals in native layout (what the committed deltas round; lets a ledger store
        them as exact low-rank factors)."""
        return {f"{path}.weight": self.adapter.to_native(path, total).detach().cpu() for path, total in self.totals.items()}


def _out_proj_output(lm: LoadedModel, layer: int, keys: torch.Tensor) -> torch.Tensor:
    """The edited projection's output ``W k (+ b)`` at ``keys`` ([n, d_in]), in the keys' dtype."""
    path = lm.adapter.mlp_out_proj(layer)
    out = keys @ lm.adapter.weight(path).to(device=keys.device, dtype=keys.dtype).T
    bias = getattr(lm.adapter.module(path), "bias", None)
    return out + bias.detach().to(device=keys.device, dtype=keys.dtype) if bias is not None else out


@dataclass
class LayerContext:
    """What a method's solve may use at one layer."""

    layer: int
    moment: SecondMoment | None
    memory: torch.Tensor | None  # Σ k kᵀ of past edits at this layer (None when memory is off or empty)
    device: torch.device  # where to solve (float64)


class LocateEditEditor(Editor):
    """Base class of the locate-and-edit methods. Subclasses implement :meth:`solve_layer`."""

    config_class: ClassVar[type[EditorConfig]] = LocateEditConfig
    # ROME edits one fact at a time; the others edit the whole batch at once.
    one_fact_at_a_time: ClassVar[bool] = False
    needs_statistics: ClassVar[bool] = True
    default_layer_count: ClassVar[int] = 5
    profile_group: ClassVar[str | None] = LOCATE_AND_EDIT

    def __init__(self, config: EditorConfig | None = None) -> None:
        super().__init__(config)
        self._memory: dict[int, torch.Tensor] = {}
        self._memory_keys = 0
        self._moment_cache: dict[tuple[Any, ...], SecondMoment] = {}
        self._contexts: dict[tuple[str, int], ContextTemplates] = {}
        self._stabilisers = StabiliserState()

    @property
    def cfg(self) -> LocateEditConfig:
        assert isinstance(self.config, LocateEditConfig)
        return self.config

    def resolve_layers(self, lm: LoadedModel) -> list[int]:
        n = lm.adapter.num_layers
        layers = self.cfg.layers if self.cfg.layers is not None else auto_layers(n, self.default_layer_count)
        if self.cfg.layers is None and self.one_fact_at_a_time:
            layers = layers[-1:]
        if max(layers) >= n:
            raise ValueError(f"{self.name}: layer {max(layers)} out of range; the model has {n} layers")
        return layers

    # ------------------------------------------------------------------ the method's part
    def solve_layer(self, keys: torch.Tensor, resid: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        """The canonical ``[d_out, d_in]`` float64 update of one layer from keys ``[n, d_in]`` and the
        residuals ``[n, d_out]`` it must realise."""
        raise NotImplementedError

    def residual_correction(
        self, lm: LoadedModel, layer: int, keys: torch.Tensor, bare_keys: torch.Tensor
    ) -> torch.Tensor | float:
        """Added to the residual the update must produce at ``keys``. The gap ``z - h`` is measured on the
        bare prompt; MEMIT-style methods map it to the averaged key as it is (0 here). r-ROME measures the
        residual at the averaged key ``k̄`` instead: ``v* - W k̄ = gap + W (k_bare - k̄)`` (ROME overrides)."""
        return 0.0

    def layer_info(self, ctx: LayerContext) -> dict[str, Any]:
        """Extra per-layer figures for ``EditResult.info`` (e.g. AlphaEdit's null-space dimension)."""
        return {}

    # ------------------------------------------------------------------ pipeline
    def target_settings(self) -> TargetSettings:
        return TargetSettings.from_config(self.cfg)

    def context_templates(self, lm: LoadedModel) -> ContextTemplates:
        key = (lm.name, id(lm.model))
        if key not in self._contexts:
            c = self.cfg
            self._contexts[key] = make_context_templates(lm, c.context_mode, c.context_count, c.context_length)
        return self._contexts[key]

    def statistics(self, lm: LoadedModel, layers: list[int]) -> dict[int, SecondMoment]:
        c = self.cfg
        settings = (c.mom2_corpus, c.mom2_n_samples, c.mom2_max_length, c.mom2_dtype)
        wanted = {layer: (lm.name, id(lm.model), layer, *settings) for layer in layers}
        missing = [layer for layer, key in wanted.items() if key not in self._moment_cache]
        if missing:
            fresh = second_moments(
                lm, missing, corpus=c.mom2_corpus, n_samples=c.mom2_n_samples, max_length=c.mom2_max_length,
                dtype=c.mom2_dtype, token_budget=max(c.mom2_token_budget, c.mom2_max_length),
                progress=self.show_progress,
            )
            for layer, moment in fresh.items():
                moment.moment = moment.moment.to(lm.device)
                self._moment_cache[wanted[layer]] = moment
        return {layer: self._moment_cache[key] for layer, key in wanted.items()}

    def remembers(self) -> bool:
        return self.cfg.past_edit_memory

    def apply(self, lm: LoadedModel, requests: Sequence[EditRequest]) -> EditResult:
        if not requests:
            raise ValueError(f"{self.name}: no edit requests")
        for request in requests:
            if not isinstance(request, EditRequest):
                raise TypeError(f"{self.name}: expected EditRequest objects, got {type(request).__name__}")
        timer = PhaseTimer()
        layers = self.resolve_layers(lm)
        with timer.phase("statistics"):
            moments = self.statistics(lm, layers) if self.needs_statistics else {}
        with timer.phase("context"):
            contexts = self.context_templates(lm)
        groups = [[r] for r in requests] if self.one_fact_at_a_time else [list(requests)]
        writer = _WeightWriter(lm.adapter)
        request_stats: list[dict[str, Any]] = []
        layer_figures: dict[int, dict[str, Any]] = {}
        was_training = lm.model.training
        # The memory is only ever replaced, never changed in place: a shallow copy restores it on failure.
        memory_before, memory_keys_before = dict(self._memory), self._memory_keys
        stabilisers_before = self._stabilisers.copy()
        lm.model.eval()
        try:
            for group in groups:
                request_stats += self._edit_group(lm, group, layers, contexts, moments, writer, timer, layer_figures)
            if self.cfg.acts_on_weights():
                with timer.phase("stabilise"):
                    self._stabilisers, figures = stabilise_weights(
                        lm.adapter, writer.originals, writer.totals, self.cfg, self._stabilisers
                    )
                for stat in request_stats:
                    stat.update(figures)
            deltas, originals = writer.commit()
        except BaseException:
            writer.restore()
            self._memory, self._memory_keys = memory_before, memory_keys_before
            self._stabilisers = stabilisers_before
            raise
        finally:
            lm.model.train(was_training)
        return EditResult(
            method=self.name,
            deltas=deltas,
            originals=originals,
            timings=dict(timer.seconds),
            request_stats=request_stats,
            info=self._info(layers, contexts, moments, layer_figures, len(requests)),
            precise=writer.precise(),
        )

    def _edit_group(
        self,
        lm: LoadedModel,
        group: list[EditRequest],
        layers: list[int],
        contexts: ContextTemplates,
        moments: Mapping[int, SecondMoment],
        writer: _WeightWriter,
        timer: PhaseTimer,
        layer_figures: dict[int, dict[str, Any]],
    ) -> list[dict[str, Any]]:
        last = layers[-1]
        device = solve_device(lm.device)
        with timer.phase("targets"):
            targets = optimise_targets(lm, group, contexts, last, self.target_settings())
        for reason in targets.info.get("fallbacks", []):
            warnings.warn(f"target optimisation recomputed every position (slower, same result): {reason}", stacklevel=2)
        z = targets.z.to(device=device, dtype=torch.float64)
        if self.cfg.nas:
            with timer.phase("nas"):
                z = self._nas_targets(lm, group, last, z, targets.init.to(z), targets.stats)
        new_keys: dict[int, torch.Tensor] = {}
        z_error_before: torch.Tensor | None = None
        for i, layer in enumerate(layers):
            with timer.phase("keys"):
                found = keys_and_hidden(
                    lm, group, contexts, [layer], hidden_layer=last, average=self.cfg.key_average
                )
            assert found.hidden is not None
            keys = found.keys[layer].to(device=device, dtype=torch.float64)
            gap = z - found.hidden.to(device=device, dtype=torch.float64)
            if z_error_before is None:
                z_error_before = gap.norm(dim=-1)
            ctx = LayerContext(layer, moments.get(layer), self._memory.get(layer) if self.remembers() else None, device)
            bare_keys = found.bare_keys[layer].to(device=device, dtype=torch.float64)
            value = _out_proj_output(lm, layer, bare_keys)
            resid = lm.adapter.mlp_value_change(layer, value, gap / (len(layers) - i))
            resid = resid + self.residual_correction(lm, layer, keys, bare_keys)
            with timer.phase("solve"):
                delta = self.solve_layer(keys, resid, ctx)
                writer.add(lm.adapter.mlp_out_proj(layer), delta)
            new_keys[layer] = keys
            figures = layer_figures.setdefault(layer, {"updates": 0})
            figures["updates"] += 1
            figures["key_norm_mean"] = float(keys.norm(dim=-1).mean())
            figures.update(self.layer_info(ctx))
        with timer.phase("keys"):
            after = keys_and_hidden(lm, group, contexts, [], hidden_layer=last).hidden
        assert after is not None and z_error_before is not None
        z_error_after = (z - after.to(device=device, dtype=torch.float64)).norm(dim=-1)
        if self.remembers():
            self._remember(new_keys, lm)
        for stat, before, after_err in zip(targets.stats, z_error_before, z_error_after, strict=True):
            stat["z_error_before"] = float(before)
            stat["z_error_after"] = float(after_err)
        return targets.stats

    def _nas_targets(
        self, lm: LoadedModel, group: list[EditRequest], last: int, z: torch.Tensor, hidden: torch.Tensor,
        stats: list[dict[str, Any]],
    ) -> torch.Tensor:
        """NAS: rescale the solved value vectors to the reference norm (measured on the first group edited,
        i.e. on the unedited model, unless set in the config)."""
        v0 = mlp_outputs(lm, group, last).to(z)
        reference = self.cfg.nas_reference_norm or self._stabilisers.nas_reference
        if reference is None:
            reference = trimmed_mean((v0 + z - hidden).norm(dim=-1))
            self._stabilisers = self._stabilisers.copy()
            self._stabilisers.nas_reference = reference
        result = nas_targets(z, hidden, v0, reference, self.cfg.nas_skip_factor)
        for stat, extra in zip(stats, result.stats, strict=True):
            stat.update(extra, nas_reference=reference)
        return result.z.to(z)

    def _remember(self, keys: Mapping[int, torch.Tensor], lm: LoadedModel) -> None:
        dtype = resolve_dtype(self.cfg.memory_dtype)
        for layer, k in keys.items():
            gram = (k.T @ k).to(device=lm.device, dtype=dtype)
            past = self._memory.get(layer)
            self._memory[layer] = gram if past is None else past.to(device=lm.device, dtype=dtype) + gram
        self._memory_keys += int(next(iter(keys.values())).shape[0]) if keys else 0

    def _info(
        self,
        layers: list[int],
        contexts: ContextTemplates,
        moments: Mapping[int, SecondMoment],
        layer_figures: dict[int, dict[str, Any]],
        n_requests: int,
    ) -> dict[str, Any]:
        corpus = next(iter(moments.values())).corpus if moments else None
        return {
            "layers": layers,
            "config": self.cfg.model_dump(mode="json"),
            "contexts": contexts.describe(),
            "statistics": {
                "corpus": corpus,
                "corpus_fallback": bool(corpus and corpus.get("fallback")),
                "tokens": {str(k): m.tokens for k, m in moments.items()},
                "from_cache": {str(k): m.from_cache for k, m in moments.items()},
            },
            "batch_mode": "one fact at a time" if self.one_fact_at_a_time else "batch",
            "n_requests": n_requests,
            "memory_keys": self._memory_keys if self.remembers() else 0,
            "layer_figures": {str(k): v for k, v in layer_figures.items()},
        }

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, torch.Tensor]:
        state = self._stabilisers.state_dict()
        if not self._memory:
            return state
        for layer, gram in self._memory.items():
            state.update(_packed_gram(f"memory.layer{layer}", gram.detach().cpu()))
        state["memory.keys"] = torch.tensor([self._memory_keys], dtype=torch.int64)
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        memory: dict[int, torch.Tensor] = {}
        keys = 0
        for name, tensor in state.items():
            if name.startswith("stabilisers."):
                continue
            if name == "memory.keys":
                keys = int(tensor.reshape(-1)[0].item())
            elif name.startswith("memory.layer") and name.endswith(UPPER_TRIANGLE):
                layer = name[len("memory.layer"):-len(UPPER_TRIANGLE)]
                if not layer.isdigit():
                    raise ValueError(f"{self.name}: unexpected state entry '{name}'")
                memory[int(layer)] = _unpacked_gram(name, tensor)
            elif name.startswith("memory.layer") and name[len("memory.layer"):].isdigit():
                if tensor.dim() != 2 or tensor.shape[0] != tensor.shape[1]:
                    raise ValueError(f"{self.name}: state entry {name} must be a square matrix")
                memory[int(name[len("memory.layer"):])] = tensor.clone()
            else:
                raise ValueError(f"{self.name}: unexpected state entry '{name}'")
        self._memory = memory
        self._memory_keys = keys
        self._stabilisers = StabiliserState.from_state_dict(state)

    def preservation(self, ctx: LayerContext, weight: float) -> torch.Tensor:
        """``λ_p E[k kᵀ] (+ Σ past k kᵀ)`` in float64 on the solve device."""
        if ctx.moment is None:
            raise EditError(f"{self.name}: no key statistics for layer {ctx.layer}")
        preserve = weight * ctx.moment.moment.to(device=ctx.device, dtype=torch.float64)
        if ctx.memory is not None:
            preserve = preserve + ctx.memory.to(device=ctx.device, dtype=torch.float64)
        return preserve
