"""The intervention loop: train for a set number of steps and record weight norms and loss on the way.

Kinds: ``continued-pretraining`` (next-token loss on text, every parameter trained), ``finetune`` (loss on
the answer tokens of a task, every parameter trained) and ``lora`` (``peft`` adapters on the chosen
matrices; the tracked weights are the merged ``W + scale·B A``, and the adapters are merged into the
model at the end so that it is a plain model again).

An interrupted run continues exactly from its newest saved state (``save_every``; :mod:`.state`):
``run_intervention(cfg, resume=True)``, ``seqedit intervene --resume DIR`` or ``seqedit study`` again.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from seqedit import rundir
from seqedit.editors.edit_loss import frozen_eval, row_nll
from seqedit.intervene.config import InterventionConfig
from seqedit.intervene.data import Dataset, load_dataset, split_batches
from seqedit.intervene.norms import group_growth, norm_rows
from seqedit.intervene.state import latest_saved_step, restore_training_state, save_training_state
from seqedit.models.adapters.base import MatrixInfo
from seqedit.models.loading import LoadedModel
from seqedit.models.tokens import PromptTargetBatch
from seqedit.monitor.norms import NormMonitor, WeightChanges
from seqedit.runner.store import RunDirectoryError, RunStore, Status, environment_info
from seqedit.utils.torch_utils import resolve_device, seed_everything

LORA_ADAPTER = "seqedit_intervention"
KIND = rundir.KIND_INTERVENTION  # progress.json's kind


class _Trainable:
    """What an intervention trains, and how the tracked (effective) weights are read."""

    def __init__(self, lm: LoadedModel, cfg: InterventionConfig, infos: list[MatrixInfo]) -> None:
        self.lm, self.cfg = lm, cfg
        self.tuner: Any = None
        self.lora_paths: set[str] = set()
        self.params: dict[str, torch.nn.Parameter]  # name -> trained parameter (what a saved state holds)
        if cfg.kind == "lora":
            self._inject_lora(infos)
            self.params = {n: p for n, p in lm.model.named_parameters() if "lora_" in n}
            self.trained = set(self.lora_paths)
        else:
            self.params = dict(lm.model.named_parameters())
            self.trained = {info.path for info in infos}
        for p in self.params.values():
            p.requires_grad_(True)

    def _inject_lora(self, infos: list[MatrixInfo]) -> None:
        from peft import LoraConfig, LoraModel
        from peft.tuners.tuners_utils import cast_adapter_dtype

        layers = set(self.cfg.lora_layers) if self.cfg.lora_layers is not None else None
        n = self.lm.adapter.num_layers
        chosen = [i for i in infos if i.kind in self.cfg.lora_kinds and (layers is None or i.layer in {x % n for x in layers})]
        if not chosen:
            raise ValueError("lora_kinds / lora_layers select no matrix of this model")
        self.lora_paths = {i.path for i in chosen}
        config = LoraConfig(
            r=self.cfg.lora_rank, lora_alpha=self.cfg.lora_alpha, lora_dropout=0.0, bias="none",  # type: ignore[arg-type]
            target_modules=sorted(self.lora_paths),
            fan_in_fan_out=any(self.lm.adapter.is_transposed(p) for p in self.lora_paths),
        )
        self.tuner = LoraModel(self.lm.model, config, LORA_ADAPTER)
        cast_adapter_dtype(self.lm.model, adapter_name=LORA_ADAPTER, autocast_adapter_dtype=True)

    def weight_of(self, info: MatrixInfo) -> torch.Tensor:
        """Canonical effective weight: ``W`` (plain) or ``W + scale·B A`` (LoRA, not merged in place)."""
        if info.path not in self.lora_paths:
            return self.lm.adapter.weight(info.path)
        layer = self.lm.model.get_submodule(info.path)
        base = layer.get_base_layer().weight  # type: ignore[operator]
        base = base.T if self.lm.adapter.is_transposed(info.path) else base
        a = layer.lora_A[LORA_ADAPTER].weight  # type: ignore[index,union-attr]
        b = layer.lora_B[LORA_ADAPTER].weight  # type: ignore[index,union-attr]
        delta = (b.float() @ a.float()) * float(layer.scaling[LORA_ADAPTER])  # type: ignore[index]
        return base.float() + delta

    def finish(self) -> None:
        if self.tuner is not None:
            self.tuner.merge_and_unload()
            self.tuner = None


def batch_loss(lm: LoadedModel, batch: PromptTargetBatch) -> torch.Tensor:
    logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return row_nll(logits, batch).mean()


@torch.no_grad()
def held_out_loss(lm: LoadedModel, dataset: Dataset, eval_batches: list[list[int]]) -> float:
    was_training = lm.model.training
    lm.model.eval()
    try:
        losses = [float(batch_loss(lm, dataset.batch(idx).to(lm.device))) for idx in eval_batches]
    finally:
        lm.model.train(was_training)
    return sum(losses) / len(losses)


def _loss_row(step: int, name: str, value: float, scope: str, definition: str) -> dict[str, Any]:
    return {"step": step, "n_edits": 0, "group": "train", "name": name, "value": value, "scope": scope,
            "layer": None, "definition": definition}


def run_intervention(
    cfg: InterventionConfig,
    lm: LoadedModel | None = None,
    *,
    progress: bool = True,
    resume: bool = False,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Run one intervention (``resume``: continue the unfinished one in ``cfg.output_dir`` from its newest
    saved state; the config must be the one it started with) and write its run directory. Returns the
    summary (also in summary.json); ``max_steps`` stops after that many more steps, unfinished
    (``{"status": "running", ...}``)."""
    cfg = cfg.resolved()
    store = RunStore(cfg.output_dir)
    with store.locked():  # one process per run directory
        return _run_locked(cfg, store, lm, progress, resume, max_steps)


def _run_locked(
    cfg: InterventionConfig, store: RunStore, lm: LoadedModel | None, progress: bool, resume: bool,
    max_steps: int | None,
) -> dict[str, Any]:
    assert cfg.data is not None and cfg.lr is not None
    start = _prepare_resume(store, cfg) if resume else None
    if start is not None and start < 0:
        return json.loads(store.summary_path.read_text(encoding="utf-8"))  # finished already
    seed_everything(cfg.seed)
    if lm is None:
        from seqedit.models import load

        lm = load(cfg.model, dtype=cfg.dtype, device=str(resolve_device(cfg.device)))
    dataset, data_description = load_dataset(lm.tokenizer, cfg.data, cfg.seq_len)  # before the run exists
    eval_batches, train_batches = split_batches(len(dataset), cfg.batch_size, cfg.eval_batches, cfg.seed)
    if not resume:
        store.create(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), environment_info(lm), KIND)
        _progress(store, "running", 0, f"{cfg.kind} on {data_description}")
    infos = lm.adapter.matrices("all")
    started = time.perf_counter()
    try:
        with frozen_eval(lm.model):  # _train switches training on; flags and modes are restored exactly after
            reached, trained = _train(lm, cfg, store, dataset, eval_batches, train_batches, infos, progress,
                                      start or 0, max_steps)
    except BaseException as exc:
        _progress(store, "failed", _completed_steps(store), f"{type(exc).__name__}: {exc}")
        store.write_parquet_mirrors()
        raise
    if reached < cfg.steps:
        store.write_parquet_mirrors()
        return {"status": "running", "completed_steps": reached, "steps": cfg.steps}
    summary = _summary(store)
    summary.update(
        {"kind": cfg.kind, "model": lm.name, "data": data_description, "steps": cfg.steps, "lr": cfg.lr,
         "trained_matrices": trained,
         # the steps' own times (a resumed run's sessions together); this session's wall time apart
         "total_s": round(sum(float(r["total_s"]) for r in store.read(rundir.TIMINGS)), 2),
         "session_s": round(time.perf_counter() - started, 2)}
    )
    store.write_summary(summary)
    store.write_parquet_mirrors()
    store.remove_states()  # a finished run needs no training state (gigabytes for full training)
    _progress(store, "finished", cfg.steps, f"{cfg.kind} on {data_description}: {cfg.steps} steps")
    return summary


def _prepare_resume(store: RunStore, cfg: InterventionConfig) -> int:
    """The step to continue after (-1: finished already); refuses another kind of run or a changed config,
    and drops what was recorded after the newest saved state."""
    progress = store.read_progress()
    if progress.get("kind") != KIND:
        raise RunDirectoryError(f"{store.root} holds a run of another kind ({progress.get('kind')}), not an intervention")
    stored = yaml.safe_load(store.config_path.read_text(encoding="utf-8")) or {}
    requested = cfg.model_dump(mode="json")
    # A field seqedit gained after the run started was not recorded: nothing to compare it with.
    changed = sorted(k for k in stored if k != "output_dir" and stored[k] != requested.get(k))
    if changed:
        shown = "; ".join(f"{k}: {stored.get(k)!r} -> {requested.get(k)!r}" for k in changed[:8])
        raise RunDirectoryError(f"{store.config_path}: the resumed intervention would be a different run ({shown}); "
                                "start a new run with another output_dir")
    if progress.get("status") == "finished":
        return -1
    store.remove_temporary_files()
    saved = latest_saved_step(store)
    store.truncate_after(saved if saved is not None else -1)  # nothing saved: from the start, baseline included
    return saved or 0


def _summary(store: RunStore) -> dict[str, Any]:
    """Losses and growth read back from the tables, so a resumed run's summary covers all its steps."""
    rows = store.read(rundir.CHECKPOINTS)
    train = {int(r["step"]): float(r["value"]) for r in rows if r["name"] == "loss"}
    held_out = {int(r["step"]): float(r["value"]) for r in rows if r["name"] == "eval_loss"}
    return {
        "train_loss_first": train[min(train)],
        "train_loss_last": train[max(train)],
        "eval_loss_start": held_out[0],
        "eval_loss_end": held_out[max(held_out)],
        "growth": group_growth(store.read(rundir.NORMS)),
    }


def _progress(store: RunStore, status: Status, completed_steps: int, message: str) -> None:
    store.write_progress(kind=KIND, status=status, completed_steps=completed_steps, n_edits=0, message=message)


def _completed_steps(store: RunStore) -> int:
    rows = store.read(rundir.TIMINGS)
    return int(rows[-1]["step"]) if rows else 0


def _train(
    lm: LoadedModel,
    cfg: InterventionConfig,
    store: RunStore,
    dataset: Dataset,
    eval_batches: list[list[int]],
    train_batches: Iterator[list[int]],
    infos: list[MatrixInfo],
    progress: bool,
    start: int,
    max_steps: int | None,
) -> tuple[int, int]:
    """Train from step ``start`` (restored from its saved state when > 0); returns the last step taken and
    the number of trained matrices."""
    assert cfg.lr is not None, "run_intervention resolves the learning rate"
    lm.model.requires_grad_(False)
    trainable = _Trainable(lm, cfg, infos)
    try:
        monitor = NormMonitor(
            lm.adapter, infos, spectral=cfg.spectral, seed=cfg.seed, weight_of=trainable.weight_of
        )
        optimiser = torch.optim.AdamW(list(trainable.params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if start:
            restore_training_state(store, start, trainable.params, optimiser, monitor)
            for _ in range(start):
                next(train_batches)  # the seeded order, advanced past the completed steps
        # after a restore: the state was saved at a record, where the last-seen weights are the current ones
        changes = WeightChanges([i for i in infos if i.path in trainable.trained], trainable.weight_of)
        eval_definition = f"mean target-token NLL on {len(eval_batches)} held-out batches"

        saved = start

        def record(step: int) -> None:
            nonlocal saved
            loss = held_out_loss(lm, dataset, eval_batches)
            snapshot = monitor.baseline() if step == 0 else monitor.update(changes.since_last())
            store.append(rundir.NORMS, norm_rows(snapshot, step, trainable.trained))
            store.append(rundir.CHECKPOINTS, [_loss_row(step, "eval_loss", loss, "held_out", eval_definition)])
            # at a record: the monitor's last-seen weights are the current ones, as a restored run starts
            if cfg.save_every and step - saved >= cfg.save_every and step < cfg.steps:
                save_training_state(store, step, trainable.params, optimiser, monitor)
                saved = step
            _progress(store, "running", step, f"step {step}/{cfg.steps}")

        if not start:
            record(0)
        last = cfg.steps if max_steps is None else min(cfg.steps, start + max_steps)
        lm.model.train()
        bar = tqdm(range(start + 1, last + 1), desc=f"intervene {cfg.kind}", disable=not progress,
                   dynamic_ncols=True, initial=start, total=cfg.steps)
        step = start
        for step in bar:
            t0 = time.perf_counter()
            value = _optimiser_step(lm, cfg, trainable, optimiser, dataset.batch(next(train_batches)), step)
            t1 = time.perf_counter()
            store.append(rundir.CHECKPOINTS, [_loss_row(step, "loss", value, "train_batch",
                                                    "mean target-token NLL of the step's batch, before its update")])
            if step % cfg.record_every == 0 or step == cfg.steps:
                record(step)
            t2 = time.perf_counter()
            store.append(rundir.TIMINGS, [{"step": step, "n_edits": 0, "edits_in_step": 0, "total_s": t2 - t0,
                                       "phase_train_s": t1 - t0, "phase_record_s": t2 - t1}])
            bar.set_postfix(loss=f"{value:.3f}")
        lm.model.eval()
    finally:
        trainable.finish()
    return step, len(trainable.trained)


def _optimiser_step(
    lm: LoadedModel, cfg: InterventionConfig, trainable: _Trainable, optimiser: torch.optim.Optimizer,
    batch: PromptTargetBatch, step: int,
) -> float:
    """One AdamW step on ``batch``; returns its loss before the update."""
    optimiser.zero_grad(set_to_none=True)
    loss = batch_loss(lm, batch.to(lm.device))
    value = float(loss.detach())
    if not math.isfinite(value):
        raise RuntimeError(f"the training loss became {value} at step {step}; lower the learning rate")
    loss.backward()
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(list(trainable.params.values()), cfg.grad_clip)
    optimiser.step()
    return value
