"""Target-vector optimisation, shared by every locate-and-edit method.

For each fact, a vector ``δ`` is added to the output of the edited MLP projection of the last edited layer
``L`` at the subject's last token, and optimised (Adam) so that the model predicts the new target after the
edit prompt preceded by each context prefix (MEMIT, Meng et al. 2023, §3.1; ROME, Meng et al. 2022, §3.1):

    loss_f = mean_prompts[-log p(target | prompt; δ_f) / len(target)]
             + kl_factor · KL(p(· | "{subject} is a"; δ_f) ‖ p(· | "{subject} is a"; 0))
             + weight_decay · ‖δ_f‖ / ‖h_f‖²

where ``h_f`` is the hidden state after layer ``L`` at the subject's last token of the bare prompt (the
"initial hidden"), and ``‖δ_f‖`` is clamped to ``clamp_norm_factor · ‖h_f‖`` after every step. The target
is the hidden state after layer ``L`` with ``δ_f`` applied (``h_f + δ_f`` for pre-norm families). The
optimisation stops when the loss falls below ``loss_threshold`` or after ``max_steps`` forward passes.

**MPES** (most-probable early stopping, ENCORE, Gupta et al. 2025, arXiv 2502.01636 §4): stop once the new
target has been the most probable token at every target position of every rewriting prompt for
``mpes_patience`` forward passes (ENCORE's released settings: 2 for Llama-3-8B, 4 for GPT2-XL).
``mpes_rule`` says which prompts count: ``all_prompts`` (seqedit's default, the rule the paper describes)
or ``released``, the released code's check, which skips each fact's first rewriting prompt -- the bare
prompt (its comment says it meant the KL prompt, which is not in that tensor) -- and so stops earlier
(docs/editors.md has a measured example).

**Batched**: the facts of a batch are optimised together -- one forward/backward for all of them, each
with its own ``δ_f`` and its own Adam moments. The loss is a sum of per-fact losses and each ``δ_f`` only
reaches its own rows, so every fact follows the same trajectory as when optimised alone (up to float
rounding); a fact that stops is frozen and its rows leave the batch.

**Upper layers only**: each step replays only the blocks from ``L`` up, the final norm, and the LM head at
the few positions the loss reads (:mod:`seqedit.editors.replay`, by default only the positions from the
subject's last token on). Only ``δ`` requires grad; no parameter gradient is ever computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from seqedit.data.records import EditRequest
from seqedit.editors.context import ContextTemplates
from seqedit.editors.keys import fill_subject, pad_rows
from seqedit.editors.replay import ReplayMode, SuffixStack, UpperStack, build_stack, lm_logits
from seqedit.models.loading import LoadedModel
from seqedit.models.tokens import encode_prompt_targets, subject_token_index

if TYPE_CHECKING:  # locate.py builds its editors on this module; the config is only a type here
    from seqedit.editors.locate import LocateEditConfig

MpesRule = Literal["all_prompts", "released"]
MPES_RULES: tuple[MpesRule, ...] = ("all_prompts", "released")

_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


@dataclass(frozen=True)
class TargetSettings:
    """Hyper-parameters of the target optimisation (the config's names in brackets, MEMIT's where they
    exist). Build it with :meth:`from_config`: the defaults and their descriptions live only in
    :class:`~seqedit.editors.locate.LocateEditConfig`."""

    lr: float  # [v_lr]
    max_steps: int  # [v_num_grad_steps]: forward passes; at most max_steps - 1 updates
    weight_decay: float  # [v_weight_decay]
    kl_factor: float  # [kl_factor]
    clamp_norm_factor: float  # [clamp_norm_factor]
    loss_threshold: float  # [v_loss_threshold]
    mpes: bool  # [mpes]
    mpes_patience: int  # [mpes_patience]
    mpes_rule: MpesRule  # [mpes_rule]
    kl_prompt: str  # [kl_prompt]
    batch_facts: int  # [target_batch_facts, 1 unless batch_targets]: facts optimised together (memory bound)
    # [target_suffix_only] Replay only the positions from the subject's last token on (cached prefix
    # keys/values); False: every position, the reference. Falls back to it where unsupported (see replay.py).
    suffix_only: bool

    @classmethod
    def from_config(cls, config: LocateEditConfig) -> TargetSettings:
        """The target settings a locate-and-edit config asks for."""
        return cls(
            lr=config.v_lr,
            max_steps=config.v_num_grad_steps,
            weight_decay=config.v_weight_decay,
            kl_factor=config.kl_factor,
            clamp_norm_factor=config.clamp_norm_factor,
            loss_threshold=config.v_loss_threshold,
            mpes=config.mpes,
            mpes_patience=config.mpes_patience,
            mpes_rule=config.mpes_rule,
            kl_prompt=config.kl_prompt,
            batch_facts=config.target_batch_facts if config.batch_targets else 1,
            suffix_only=config.target_suffix_only,
        )

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.batch_facts < 1 or self.mpes_patience < 1:
            raise ValueError("max_steps, batch_facts and mpes_patience must be >= 1")
        if self.kl_prompt.count("{}") != 1:
            raise ValueError(f"kl_prompt must contain '{{}}' once for the subject: {self.kl_prompt!r}")
        if self.mpes_rule not in MPES_RULES:
            raise ValueError(f"mpes_rule must be one of {MPES_RULES}: {self.mpes_rule!r}")


@dataclass
class TargetResult:
    """Per fact (rows in request order): target ``z``, initial hidden ``init`` and ``delta`` ([facts, d])."""

    z: torch.Tensor
    init: torch.Tensor
    delta: torch.Tensor
    stats: list[dict[str, Any]] = field(default_factory=list)
    # How the upper blocks were replayed: {"replays": {"suffix"|"full": batches built}, "fallbacks": [why the
    # suffix-only replay was not used although asked for]}.
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class _FactBatch:
    """The rows of a set of facts: rewriting prompts (one per context) and one KL prompt per fact."""

    facts: list[int]  # global fact indices, in local order
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    row_fact: torch.Tensor  # [rows] local fact index
    subject_pos: torch.Tensor  # [rows]
    bare_rows: torch.Tensor  # [local facts] row of each fact's bare prompt
    kl_rows: torch.Tensor  # [local facts]
    target_rows: torch.Tensor  # [P] rewriting row of each target token
    target_pos: torch.Tensor  # [P] position whose logits predict it
    target_tok: torch.Tensor  # [P]
    target_len: torch.Tensor  # [local facts] target length in tokens
    rows_per_fact: torch.Tensor  # [local facts] rewriting rows per fact
    stack: UpperStack | SuffixStack
    fallback: str | None  # why the suffix-only replay was not used although asked for

    def column(self, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Column of the replay's outputs holding token ``positions`` of ``rows``."""
        return self.stack.columns(rows, positions)


def _build_batch(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    facts: list[int],
    contexts: ContextTemplates,
    layer: int,
    kl_prompt: str,
    suffix_only: bool,
) -> _FactBatch:
    tok = lm.tokenizer
    prompts: list[str] = []
    targets: list[str] = []
    subject_pos: list[int] = []
    row_fact: list[int] = []
    for local, f in enumerate(facts):
        request = requests[f]
        for template in contexts.templates:
            with_slot = contexts.apply(template, request.prompt)
            prompts.append(fill_subject(with_slot, request.subject))
            targets.append(request.target_new)
            subject_pos.append(subject_token_index(tok, with_slot, request.subject))
            row_fact.append(local)
    encoded = encode_prompt_targets(tok, prompts, targets)
    rows = [encoded.input_ids[i, : int(encoded.attention_mask[i].sum())].tolist() for i in range(len(prompts))]
    n_rewrite = len(rows)
    for local, f in enumerate(facts):
        subject = requests[f].subject
        rows.append(list(tok(fill_subject(kl_prompt, subject))["input_ids"]))
        subject_pos.append(subject_token_index(tok, kl_prompt, subject))
        row_fact.append(local)
    device = lm.device
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    input_ids, attention_mask = pad_rows(rows, pad_id, device)
    labels = encoded.labels.to(device)
    target_rows, target_pos = torch.nonzero(labels != -100, as_tuple=True)
    n_ctx = len(contexts.templates)
    subject_index = torch.tensor(subject_pos, device=device)
    # δ enters at each row's subject's last token: nothing before it depends on δ.
    stack, fallback = build_stack(lm, layer, input_ids, attention_mask, subject_index, suffix_only)
    return _FactBatch(
        facts=facts,
        input_ids=input_ids,
        attention_mask=attention_mask,
        row_fact=torch.tensor(row_fact, device=device),
        subject_pos=subject_index,
        bare_rows=torch.arange(len(facts), device=device) * n_ctx,
        kl_rows=torch.arange(n_rewrite, n_rewrite + len(facts), device=device),
        target_rows=target_rows,
        target_pos=target_pos,
        target_tok=labels[target_rows, target_pos],
        target_len=torch.tensor([encoded.target_lengths[i * n_ctx] for i in range(len(facts))], device=device),
        rows_per_fact=torch.full((len(facts),), n_ctx, device=device),
        stack=stack,
        fallback=fallback,
    )


@dataclass
class _StepOutput:
    loss: torch.Tensor  # [local facts]
    nll: torch.Tensor
    all_top1: torch.Tensor  # [local facts] bool: the target is top-1 at every token of every rewriting prompt
    top1_but_bare: torch.Tensor  # [local facts] bool: the same, each fact's bare prompt left out (released MPES)
    mean_prob: torch.Tensor  # [local facts]
    block_out: torch.Tensor


def _forward(
    lm: LoadedModel,
    batch: _FactBatch,
    delta: torch.Tensor,
    init_norm: torch.Tensor,
    kl_init: torch.Tensor,
    settings: TargetSettings,
) -> _StepOutput:
    """One pass for all facts of the batch; ``delta`` and ``init_norm`` are in local fact order."""
    rows = torch.arange(batch.input_ids.shape[0], device=delta.device)
    block_out, final = batch.stack.run(delta[batch.row_fact], rows, batch.subject_pos)
    n_facts = len(batch.facts)
    # Rewriting loss at the target positions only.
    target_col = batch.column(batch.target_rows, batch.target_pos)
    log_probs = torch.log_softmax(lm_logits(lm, final[batch.target_rows, target_col]), dim=-1)
    token_lp = log_probs.gather(-1, batch.target_tok[:, None]).squeeze(-1)
    hits = log_probs.argmax(-1) == batch.target_tok
    row_of_token_fact = batch.row_fact[batch.target_rows]
    n_rows = int(batch.input_ids.shape[0])
    row_lp = torch.zeros(n_rows, dtype=token_lp.dtype, device=token_lp.device).index_add(
        0, batch.target_rows, token_lp
    )
    rewrite_rows = torch.unique(batch.target_rows)
    row_nll = -row_lp[rewrite_rows] / batch.target_len[batch.row_fact[rewrite_rows]]
    fact_of_row = batch.row_fact[rewrite_rows]
    nll = torch.zeros(n_facts, dtype=row_nll.dtype, device=row_nll.device).index_add(0, fact_of_row, row_nll)
    nll = nll / batch.rows_per_fact
    mean_prob = torch.zeros_like(nll).index_add(0, fact_of_row, torch.exp(-row_nll.detach())) / batch.rows_per_fact
    misses = torch.zeros(n_facts, dtype=torch.long, device=hits.device).index_add(
        0, row_of_token_fact, (~hits).long()
    )
    on_bare_row = torch.zeros(n_rows, dtype=torch.bool, device=hits.device)
    on_bare_row[batch.bare_rows] = True
    misses_but_bare = torch.zeros_like(misses).index_add(
        0, row_of_token_fact, ((~hits) & ~on_bare_row[batch.target_rows]).long()
    )
    # KL term at the subject's last token of "{subject} is a".
    kl_col = batch.column(batch.kl_rows, batch.subject_pos[batch.kl_rows])
    kl_log_probs = torch.log_softmax(lm_logits(lm, final[batch.kl_rows, kl_col]), dim=-1)
    kl = (kl_log_probs.exp() * (kl_log_probs - kl_init)).sum(-1)  # KL(current ‖ initial), as in MEMIT
    decay = settings.weight_decay * delta.norm(dim=-1) / init_norm.pow(2)
    loss = nll + settings.kl_factor * kl + decay
    return _StepOutput(loss, nll, misses == 0, misses_but_bare == 0, mean_prob, block_out)


def _adam_step(
    delta: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step: int, lr: float,
    active: torch.Tensor,
) -> None:
    """Adam (torch's update rule, no weight decay) on the active rows only."""
    beta1, beta2 = _ADAM_BETAS
    g = grad[active]
    m[active] = m[active] * beta1 + g * (1 - beta1)
    v[active] = v[active] * beta2 + g * g * (1 - beta2)
    bias1 = 1 - beta1**step
    bias2 = 1 - beta2**step
    denom = v[active].sqrt() / math.sqrt(bias2) + _ADAM_EPS
    delta[active] = delta[active] - (lr / bias1) * m[active] / denom


def _optimise_group(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    facts: list[int],
    contexts: ContextTemplates,
    layer: int,
    settings: TargetSettings,
) -> TargetResult:
    """Optimise the targets of ``facts`` together; results in the order of ``facts``."""
    device = lm.device
    n = len(facts)
    batch = _build_batch(lm, requests, facts, contexts, layer, settings.kl_prompt, settings.suffix_only)
    replays: dict[ReplayMode, int] = {batch.stack.replay_mode: 1}
    fallbacks = {batch.fallback} - {None}
    with torch.no_grad():
        rows = torch.arange(batch.input_ids.shape[0], device=device)
        block_out, final = batch.stack.run(None, rows, batch.subject_pos)
        bare_col = batch.column(batch.bare_rows, batch.subject_pos[batch.bare_rows])
        init = block_out[batch.bare_rows, bare_col].float()
        kl_col = batch.column(batch.kl_rows, batch.subject_pos[batch.kl_rows])
        kl_init = torch.log_softmax(lm_logits(lm, final[batch.kl_rows, kl_col]), dim=-1)
    delta = torch.zeros(n, lm.adapter.hidden_size, device=device)
    m, v = torch.zeros_like(delta), torch.zeros_like(delta)
    init_norm = init.norm(dim=-1)
    max_norm = settings.clamp_norm_factor * init_norm
    z = torch.zeros_like(delta)
    updates = [0] * n
    top1_count = [0] * n
    stats: list[dict[str, Any]] = [{} for _ in range(n)]
    live = list(range(n))  # indices into ``facts`` of the facts still optimised, in batch order
    for step in range(settings.max_steps):
        param = delta[live].clone().requires_grad_(True)
        out = _forward(lm, batch, param, init_norm[live], kl_init, settings)
        still: list[int] = []
        for j, i in enumerate(live):
            all_top1 = bool(out.all_top1[j])
            mpes_hit = all_top1 if settings.mpes_rule == "all_prompts" else bool(out.top1_but_bare[j])
            top1_count[i] += int(mpes_hit)
            if settings.mpes and top1_count[i] >= settings.mpes_patience:
                reason = "mpes"
            elif float(out.loss[j].detach()) < settings.loss_threshold:
                reason = "loss"
            elif step == settings.max_steps - 1:
                reason = "max_steps"
            else:
                still.append(j)
                continue
            bare_row = batch.bare_rows[j : j + 1]
            bare_col = batch.column(bare_row, batch.subject_pos[bare_row])
            z[i] = out.block_out[bare_row, bare_col][0].detach().float()
            stats[i] = {
                "steps": updates[i],
                "stop_reason": reason,
                "mpes_stopped_at": step if reason == "mpes" else None,
                "final_prob": float(out.mean_prob[j]),
                "final_loss": float(out.loss[j].detach()),
                "final_nll": float(out.nll[j].detach()),
                "all_top1": all_top1,
            }
        if not still:
            break
        (grad,) = torch.autograd.grad(out.loss[still].sum(), param)
        with torch.no_grad():
            mask = torch.zeros(len(live), dtype=torch.bool, device=device)
            mask[still] = True
            sub_delta, sub_m, sub_v = delta[live], m[live], v[live]
            _adam_step(sub_delta, grad, sub_m, sub_v, step + 1, settings.lr, mask)
            norms = sub_delta.norm(dim=-1)
            limit = max_norm[live]
            scale = torch.where(norms > limit, limit / norms.clamp(min=1e-30), torch.ones_like(norms))
            delta[live], m[live], v[live] = sub_delta * scale[:, None], sub_m, sub_v
        for j in still:
            updates[live[j]] += 1
        if len(still) < len(live):  # some facts finished: drop their rows from the batch
            kl_init = kl_init[still]
            live = [live[j] for j in still]
            batch = _build_batch(
                lm, requests, [facts[i] for i in live], contexts, layer, settings.kl_prompt, settings.suffix_only
            )
            mode = batch.stack.replay_mode
            replays[mode] = replays.get(mode, 0) + 1
            fallbacks |= {batch.fallback} - {None}
    info = {"replays": replays, "fallbacks": sorted(r for r in fallbacks if r is not None)}
    return TargetResult(z=z, init=init, delta=delta, stats=stats, info=info)


def optimise_targets(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    contexts: ContextTemplates,
    layer: int,
    settings: TargetSettings,
) -> TargetResult:
    """Target hidden states after ``layer`` for every request (batches of ``settings.batch_facts``)."""
    if not requests:
        raise ValueError("no edit requests")
    parts: list[TargetResult] = []
    for start in range(0, len(requests), settings.batch_facts):
        facts = list(range(start, min(start + settings.batch_facts, len(requests))))
        parts.append(_optimise_group(lm, requests, facts, contexts, layer, settings))
    replays: dict[ReplayMode, int] = {}
    for part in parts:
        for mode, count in part.info["replays"].items():
            replays[mode] = replays.get(mode, 0) + count
    result = TargetResult(
        z=torch.cat([p.z for p in parts]),
        init=torch.cat([p.init for p in parts]),
        delta=torch.cat([p.delta for p in parts]),
        stats=[s for p in parts for s in p.stats],
        info={
            "suffix_only": settings.suffix_only,
            "replays": replays,
            "fallbacks": sorted({r for p in parts for r in p.info["fallbacks"]}),
        },
    )
    for request, stat, z, init, delta in zip(requests, result.stats, result.z, result.init, result.delta, strict=True):
        stat.update(
            case_id=request.case_id,
            target_norm=float(z.norm()),
            init_norm=float(init.norm()),
            delta_norm=float(delta.norm()),
        )
    return result
