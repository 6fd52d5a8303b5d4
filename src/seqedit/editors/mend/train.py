"""Training MEND on CounterFact (the ``counterfact-train`` dataset of :mod:`seqedit.data`), resumable, with a
progress bar.

One step, one training fact (as in the MEND paper):
1. gradient factors ``(x_i, δ_i)`` of the edit loss on the edit prompt, from the unedited model;
2. ``ΔW = −α Σ δ̃ x̃ᵀ`` from the networks (the normalisation statistics are updated first);
3. with ``ΔW`` added, ``L_edit`` = mean target NLL of ``target_new`` after the edit prompt and its
   paraphrase, ``L_loc`` = KL(p_before ‖ p_after) over the tokens of the fact's neighbourhood prompt
   followed by its true answer;
4. Adam on the network parameters (``lr``) and on the step sizes α (``lr_lr``) with
   ``c_edit·L_edit + c_loc·L_loc``.

The paper's settings (GPT-2/T5 on GPUs, 100k+ steps) are Adam lr 1e-6, lr_lr 1e-4, α₀ = 1e-4,
c_edit 0.1, c_loc 1, rank 1920. The defaults keep lr_lr, α₀, c_edit and c_loc and raise the network's
learning rate to 1e-4 (rank 192) so that a CPU budget of ~1,500 steps (20 minutes on SmolLM2-135M) moves
it; a first run with c_edit 1, α₀ 1e-3 and lr_lr 1e-3 learned to edit but flipped almost every
neighbourhood prompt (see ``docs/gradient-editors.md``). Checkpoints go to ``<cache>/mend/<model>``
unless told otherwise; the optimiser state sits next to them (``train_state.safetensors`` +
``train_state.json``) so that training can resume.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from seqedit.data import EditRequest, LoadReport, load_edit_requests
from seqedit.editors.edit_loss import frozen_eval
from seqedit.editors.mend.hypernet import MendHypernet, build_spec, default_checkpoint_dir, gradient_factors
from seqedit.editors.weight_deltas import added_deltas
from seqedit.models.adapters.base import MatrixKind
from seqedit.models.loading import LoadedModel
from seqedit.models.tokens import PromptTargetBatch, encode_prompt_targets, target_log_probs
from seqedit.utils.io import append_jsonl_atomic, load_tensors, save_tensors_atomic, write_json_atomic

STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"
LOG_FILE = "train_log.jsonl"


class MendTrainConfig(BaseModel):
    """Settings of ``seqedit mend train``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "smollm2-135m", description="Model to train the editor for: embedded name, hub id or local directory."
    )
    layers: list[int] = Field([-3, -2, -1], description="Edited layers (negative counts from the top).")
    kinds: list[MatrixKind] = Field(["mlp.out_proj"], min_length=1, description="Edited matrix kinds.")
    rank: int = Field(192, ge=1, description="Rank of the networks' low-rank blocks.")
    edit_lr_init: float = Field(1e-4, gt=0, description="Initial step size alpha of every matrix (paper: 1e-4).")
    lr: float = Field(1e-4, gt=0, description="Adam learning rate of the network parameters.")
    lr_lr: float = Field(1e-4, gt=0, description="Adam learning rate of the step sizes alpha (paper: 1e-4).")
    c_edit: float = Field(0.1, ge=0, description="Weight of the edit loss (paper: 0.1).")
    c_loc: float = Field(1.0, ge=0, description="Weight of the locality KL (paper: 1).")
    grad_clip: float = Field(100.0, gt=0, description="Gradient-norm clip of the outer update.")
    steps: int = Field(2000, ge=1, description="Total training steps (one fact per step).")
    max_minutes: float | None = Field(
        20.0, gt=0, description="Stop (and save) after this many minutes of training and validation "
        "(None, or 0 on the command line: no limit)."
    )
    data: Path | None = Field(
        None, description="Edit file in any layout seqedit.data reads; None: the registered counterfact-train dataset."
    )
    holdout: int = Field(32, ge=0, description="Facts held out of training (last of the shuffled file) for validation.")
    eval_every: int = Field(250, ge=1, description="Validate every this many steps.")
    eval_facts: int = Field(16, ge=1, description="Held-out facts used per validation.")
    save_every: int = Field(250, ge=1, description="Save a checkpoint every this many steps.")
    stats_warmup: int = Field(
        20, ge=1, description="Facts whose gradient factors seed the normalisation statistics before step 1."
    )
    output: Path | None = Field(None, description="Checkpoint directory; None: <cache>/mend/<model>.")
    seed: int = Field(0, description="Seed of the data order and the networks' initialisation.")


# ---------------------------------------------------------------------- data
def load_training_facts(cfg: MendTrainConfig) -> LoadReport[EditRequest]:
    """The training facts; invalid records (e.g. a prompt that does not contain its subject) are skipped."""
    return load_edit_requests(cfg.data if cfg.data is not None else "counterfact-train", skip_invalid=True)


def split_facts(facts: Sequence[EditRequest], holdout: int, seed: int) -> tuple[list[EditRequest], list[EditRequest]]:
    """Shuffle with ``seed``; the last ``holdout`` facts are for validation, the rest for training."""
    order = list(range(len(facts)))
    random.Random(seed).shuffle(order)
    shuffled = [facts[i] for i in order]
    cut = len(shuffled) - holdout
    if cut < 1:
        raise ValueError(f"{len(facts)} facts leave none for training with holdout={holdout}")
    return shuffled[:cut], shuffled[cut:]


class TrainingExample:
    """One fact encoded as a batch: row 0 the edit prompt, then its paraphrases, then the locality row."""

    def __init__(self, lm: LoadedModel, fact: EditRequest) -> None:
        prompts = [fact.full_prompt, *fact.paraphrase_prompts]
        targets = [fact.target_new] * len(prompts)
        self.edit_rows = list(range(len(prompts)))
        self.loc_rows = list(range(len(prompts), len(prompts) + len(fact.neighborhood)))
        prompts += [n.prompt for n in fact.neighborhood]
        targets += [n.target for n in fact.neighborhood]
        batch = encode_prompt_targets(lm.tokenizer, prompts, targets, include_last_target_token=True)
        self.batch: PromptTargetBatch = batch.to(lm.device)


def locality_kl(logits_before: torch.Tensor, logits_after: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """Mean over attended positions of KL(p_before ‖ p_after)."""
    lp_before = torch.log_softmax(logits_before.float(), -1)
    lp_after = torch.log_softmax(logits_after.float(), -1)
    kl = (lp_before.exp() * (lp_before - lp_after)).sum(-1)
    mask = attention.bool()
    return kl[mask].mean() if mask.any() else kl.sum() * 0.0


def mend_losses(
    lm: LoadedModel, hypernet: MendHypernet, example: TrainingExample, *, update_stats: bool
) -> dict[str, torch.Tensor]:
    """Edit and locality losses of one fact (differentiable in the hypernetwork's parameters)."""
    paths = hypernet.spec.paths
    batch = example.batch
    factors, logits_before = gradient_factors(lm, paths, batch, [0])
    if update_stats:
        hypernet.update_stats(factors)
    updates = hypernet.updates(factors)
    with added_deltas(lm.adapter, updates):
        logits_after = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    _total, mean_lp = target_log_probs(logits_after, batch)
    edit_loss = -mean_lp[example.edit_rows].mean()
    if example.loc_rows:
        rows = example.loc_rows
        loc_loss = locality_kl(logits_before[rows], logits_after[rows], batch.attention_mask[rows])
    else:
        loc_loss = edit_loss.new_zeros(())
    return {"edit": edit_loss, "loc": loc_loss}


# ---------------------------------------------------------------------- validation
@torch.no_grad()
def _mean_lp_with(lm: LoadedModel, updates: dict[str, torch.Tensor], prompts: list[str], targets: list[str]) -> torch.Tensor:
    batch = encode_prompt_targets(lm.tokenizer, prompts, targets).to(lm.device)
    with added_deltas(lm.adapter, updates):
        logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return target_log_probs(logits, batch)[1]


def validate(lm: LoadedModel, hypernet: MendHypernet, facts: Sequence[EditRequest]) -> dict[str, float]:
    """Single-fact edits of held-out facts: efficacy / paraphrase / neighbourhood success rates
    (mean-token-log-prob comparison of target_new and target_true), nothing written to the model."""
    hits: dict[str, list[bool]] = {"efficacy": [], "paraphrase": [], "neighborhood": []}
    for fact in facts:
        batch = encode_prompt_targets(lm.tokenizer, [fact.full_prompt], [fact.target_new]).to(lm.device)
        factors, _ = gradient_factors(lm, hypernet.spec.paths, batch, [0])
        with torch.no_grad():
            updates = hypernet.updates(factors)
        groups = [("efficacy", fact.full_prompt, fact.target_true or "")]
        groups += [("paraphrase", p, fact.target_true or "") for p in fact.paraphrase_prompts]
        groups += [("neighborhood", n.prompt, n.target) for n in fact.neighborhood]
        prompts = [g[1] for g in groups]
        new_lp = _mean_lp_with(lm, updates, prompts, [fact.target_new] * len(groups))
        true_lp = _mean_lp_with(lm, updates, prompts, [g[2] for g in groups])
        for (name, _, _), ln, lt in zip(groups, new_lp.tolist(), true_lp.tolist(), strict=True):
            hits[name].append(ln > lt if name != "neighborhood" else lt > ln)
    return {f"val_{k}": (sum(v) / len(v) if v else float("nan")) for k, v in hits.items()}


# ---------------------------------------------------------------------- optimiser state (safetensors)
def _optimizer_tensors(optimiser: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimiser.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, slot in state["state"].items():
        for key, value in slot.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value
            else:
                scalars[f"state.{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimiser: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    slots: dict[int, dict[str, Any]] = {}
    for name, value in [*tensors.items(), *meta["scalars"].items()]:
        _, index, key = name.split(".", 2)
        slots.setdefault(int(index), {})[key] = value
    optimiser.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})


# ---------------------------------------------------------------------- training loop
class MendTrainer:
    """Owns the hypernetwork, the optimiser and the bookkeeping of one training run."""

    def __init__(self, lm: LoadedModel, cfg: MendTrainConfig, *, resume: bool = False) -> None:
        self.lm, self.cfg = lm, cfg
        self.output = cfg.output or default_checkpoint_dir(lm.name)
        facts = load_training_facts(cfg)
        self.data_file = facts.path
        self.train_facts, self.val_facts = split_facts(facts, cfg.holdout, cfg.seed)
        self.step = 0
        self.elapsed = 0.0
        if resume and (self.output / STATE_JSON).is_file():
            self.hypernet = MendHypernet.load(self.output, device=lm.device)
            self._check_resumable()
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                spec = build_spec(lm, cfg.layers, cfg.kinds, cfg.rank, cfg.edit_lr_init)
                self.hypernet = MendHypernet(spec).to(lm.device)
            self._seed_statistics()
        self.hypernet.check_fits(lm.adapter)
        edit_lr_params = [self.hypernet.edit_lrs]
        net_params = [p for n, p in self.hypernet.named_parameters() if n != "edit_lrs"]
        self.optimiser = torch.optim.Adam(
            [{"params": net_params, "lr": cfg.lr}, {"params": edit_lr_params, "lr": cfg.lr_lr}]
        )
        if resume and (self.output / STATE_JSON).is_file():
            self._load_state()

    def _seed_statistics(self) -> None:
        """Normalising needs a mean and variance before the first step (MEND needs at least two rows per
        matrix; the top layer sees only one row per target token), so the first ``stats_warmup``
        training facts are passed through once for statistics only."""
        with frozen_eval(self.lm.model):
            for fact in self.train_facts[: self.cfg.stats_warmup]:
                batch = TrainingExample(self.lm, fact).batch
                factors, _ = gradient_factors(self.lm, self.hypernet.spec.paths, batch, [0])
                self.hypernet.update_stats(factors)

    def _check_resumable(self) -> None:
        spec = self.hypernet.spec
        if spec.paths != build_spec(self.lm, self.cfg.layers, self.cfg.kinds, self.cfg.rank, 0.0).paths:
            raise ValueError(f"cannot resume {self.output}: it edits {spec.paths}, the settings ask for other layers")
        if spec.rank != self.cfg.rank:
            raise ValueError(f"cannot resume {self.output}: rank {spec.rank} != {self.cfg.rank}")

    def _load_state(self) -> None:
        meta = json.loads((self.output / STATE_JSON).read_text(encoding="utf-8"))
        _restore_optimizer(self.optimiser, load_tensors(self.output / STATE_TENSORS, device=self.lm.device), meta["optimizer"])
        self.step = int(meta["step"])
        self.elapsed = float(meta["elapsed_s"])

    def save(self) -> None:
        training = {
            **self.cfg.model_dump(mode="json"),
            "completed_steps": self.step,
            "train_seconds": round(self.elapsed, 1),
            "train_facts": len(self.train_facts),
            "data_file": str(self.data_file),
        }
        self.hypernet.save(self.output, training)
        tensors, meta = _optimizer_tensors(self.optimiser)
        save_tensors_atomic(self.output / STATE_TENSORS, tensors)
        write_json_atomic(self.output / STATE_JSON, {"step": self.step, "elapsed_s": self.elapsed, "optimizer": meta})

    def fact_for_step(self, step: int) -> EditRequest:
        return self.train_facts[step % len(self.train_facts)]

    def train_step(self) -> dict[str, float]:
        example = TrainingExample(self.lm, self.fact_for_step(self.step))
        self.hypernet.train()
        losses = mend_losses(self.lm, self.hypernet, example, update_stats=True)
        total = self.cfg.c_edit * losses["edit"] + self.cfg.c_loc * losses["loc"]
        self.optimiser.zero_grad(set_to_none=True)
        if not torch.isfinite(total):
            raise RuntimeError(f"MEND training diverged at step {self.step} (loss {float(total)}); lower lr")
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.hypernet.parameters(), self.cfg.grad_clip)
        self.optimiser.step()
        self.step += 1
        return {"loss": float(total.detach()), "edit": float(losses["edit"].detach()), "loc": float(losses["loc"].detach())}

    def run(self, progress: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Train until ``steps`` or ``max_minutes``; saves on schedule and at the end. Returns a summary."""
        cfg = self.cfg
        budget = cfg.max_minutes * 60 if cfg.max_minutes is not None else float("inf")
        started = time.perf_counter() - self.elapsed
        window: list[dict[str, float]] = []
        last_val: dict[str, float] = {}
        with frozen_eval(self.lm.model), tqdm(
            total=cfg.steps, initial=self.step, desc="mend train", disable=not progress, dynamic_ncols=True
        ) as bar:
            if self.step == 0 and self.val_facts:
                last_val = self._validate()  # the untrained network: a normalised gradient step
                if log:
                    log("step 0: " + ", ".join(f"{k} {v:.2f}" for k, v in last_val.items()))
            while self.step < cfg.steps and self.elapsed < budget:
                window.append(self.train_step())
                self.elapsed = time.perf_counter() - started
                bar.update(1)
                if len(window) >= 25 or self.step == cfg.steps:
                    means = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
                    alphas = self.hypernet.edit_lrs.detach().tolist()
                    append_jsonl_atomic(
                        self.output / LOG_FILE,
                        [{"step": self.step, "elapsed_s": round(self.elapsed, 1), **means, "edit_lrs": alphas}],
                    )
                    bar.set_postfix(edit=f"{means['edit']:.2f}", loc=f"{means['loc']:.3f}", alpha=f"{alphas[-1]:.2e}")
                    window = []
                if self.val_facts and (self.step % cfg.eval_every == 0 or self.step == cfg.steps):
                    last_val = self._validate()
                    if log:
                        log(f"step {self.step}: " + ", ".join(f"{k} {v:.2f}" for k, v in last_val.items()))
                if self.step % cfg.save_every == 0:
                    self.save()
        self.save()
        return {"steps": self.step, "train_seconds": round(self.elapsed, 1), "output": str(self.output), **last_val}

    def _validate(self) -> dict[str, float]:
        self.hypernet.eval()
        result = validate(self.lm, self.hypernet, self.val_facts[: self.cfg.eval_facts])
        append_jsonl_atomic(self.output / LOG_FILE, [{"step": self.step, "elapsed_s": round(self.elapsed, 1), **result}])
        return result


def train_mend(lm: LoadedModel, cfg: MendTrainConfig, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or resume training) a MEND hypernetwork for ``lm``; returns a summary dict."""
    return MendTrainer(lm, cfg, resume=resume).run(progress=progress)


__all__ = ["MendTrainConfig", "MendTrainer", "locality_kl", "mend_losses", "train_mend", "validate"]
