"""The editors on the embedded SmolLM2-135M with CounterFact facts (integration; needs the shared data).

Kept small for CI (a few facts, small statistics); the acceptance numbers on 10 facts per method come from
``benchmarks/editors.py`` (see docs/editors.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tolerances import assert_close_rel

from seqedit.data.records import EditRequest, NeighborhoodPrompt
from seqedit.editors import create_editor
from seqedit.editors.keys import pad_rows
from seqedit.editors.replay import UpperStack, lm_logits
from seqedit.models import hooks
from seqedit.models.tokens import encode_prompt_targets, target_log_probs

pytestmark = [pytest.mark.integration, pytest.mark.data]

SMALL_STATS = {"mom2_n_samples": 100}


def _counterfact(data_dir: Path, n: int) -> list[EditRequest]:
    records = json.loads((data_dir / "counterfact" / "counterfact-edit.json").read_text(encoding="utf-8"))
    out = []
    for rec in records[:n]:
        out.append(
            EditRequest(
                case_id=str(rec["case_id"]),
                subject=rec["subject"],
                prompt=rec["prompt"].replace(rec["subject"], "{}", 1),
                target_new=rec["target_new"],
                target_true=rec["ground_truth"],
                neighborhood=(NeighborhoodPrompt(prompt=rec["locality_prompt"], target=rec["locality_ground_truth"]),),
            )
        )
    return out


@torch.no_grad()
def _new_and_true_log_probs(lm, requests: list[EditRequest]) -> torch.Tensor:
    """``[facts, 2]``: per-token mean log-probability of the new and of the true target."""
    prompts = [r.full_prompt for r in requests for _ in range(2)]
    targets = [t for r in requests for t in (r.target_new, r.target_true)]
    batch = encode_prompt_targets(lm.tokenizer, prompts, targets)
    logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return target_log_probs(logits, batch)[1].reshape(-1, 2)


def _new_beats_true(lm, requests: list[EditRequest]) -> list[bool]:
    lp = _new_and_true_log_probs(lm, requests)
    return (lp[:, 0] > lp[:, 1]).tolist()


@pytest.fixture(autouse=True)
def _data_dir_env(shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQEDIT_DATA_DIR", str(shared_data_dir))


def test_upper_layer_shortcut_matches_full_model(embedded_model):
    lm = embedded_model
    texts = ["The mother tongue of Danielle Darrieux is", "Toko Yasuda plays the"]
    ids, mask = pad_rows([lm.tokenizer(t)["input_ids"] for t in texts], lm.tokenizer.pad_token_id, lm.device)
    rows, positions = torch.arange(2), torch.tensor([7, 3])
    delta = torch.randn(2, lm.adapter.hidden_size, generator=torch.Generator().manual_seed(0)) * 20
    _, final = UpperStack(lm, 7, ids, mask).run(delta, rows, positions)

    def bump(hidden: torch.Tensor) -> torch.Tensor:
        add = torch.zeros_like(hidden)
        add[rows, positions] = delta
        return hidden + add

    with hooks.edit_output(lm.adapter.module(lm.adapter.mlp_out_proj(7)), bump):
        full = lm.model(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert_close_rel(lm_logits(lm, final)[real], full[real], rel=1e-4)


def test_encore_batch_edit_and_exact_undo(embedded_model, shared_data_dir):
    lm = embedded_model
    requests = _counterfact(shared_data_dir, 4)
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    new_before = _new_and_true_log_probs(lm, requests)[:, 0]
    editor = create_editor("encore", lm, SMALL_STATS)
    result = editor.apply(lm, requests)
    try:
        # ENCORE stops the targets as soon as the new object is on top (MPES) and shrinks the update, so
        # an edit can fall short; the 10-fact acceptance figure is in docs/editors.md.
        assert sum(_new_beats_true(lm, requests)) >= 3
        assert (_new_and_true_log_probs(lm, requests)[:, 0] > new_before + 1.0).all()
        assert all(s["stop_reason"] in {"mpes", "loss"} for s in result.request_stats)
        assert result.info["statistics"]["corpus"]["name"] == "wikitext2"
        assert editor.state_dict()["memory.keys"].item() == 4
    finally:
        result.undo(lm.model)
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())


def test_rome_sequential_edits(embedded_model, shared_data_dir):
    lm = embedded_model
    requests = _counterfact(shared_data_dir, 6)[4:]
    editor = create_editor("rome", lm, {**SMALL_STATS, "mpes": True})
    result = editor.apply(lm, requests)
    try:
        assert all(_new_beats_true(lm, requests))
        assert len(result.deltas) == 1
    finally:
        result.undo(lm.model)
