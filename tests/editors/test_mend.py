"""MEND on tiny models: the network's update has the right shape and rank, the gradient factors are the
true gradient's factors, checkpoints round-trip, editing is exactly undoable, training resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tolerances import assert_close_rel

from seqedit.data import DatasetNotFoundError
from seqedit.data.records import EditRequest
from seqedit.editors import create_editor
from seqedit.editors.edit_loss import request_batch
from seqedit.editors.mend.editor import MendConfig, MendEditor
from seqedit.editors.mend.hypernet import MendHypernet, build_spec, gradient_factors
from seqedit.editors.mend.network import MendNetwork, pseudo_gradient
from seqedit.editors.mend.train import MendTrainConfig, MendTrainer, load_training_facts
from seqedit.models.tiny import build_tiny_model
from seqedit.models.tokens import target_log_probs


@pytest.fixture
def tiny():
    return build_tiny_model("llama", num_layers=3, hidden=32, seed=7)


def _requests() -> list[EditRequest]:
    return [
        EditRequest(case_id="1", subject="Zorblat", prompt="The capital of {} is", target_new="Paris",
                    target_true="Rome"),
        EditRequest(case_id="2", subject="Quux", prompt="{} was born in", target_new="Oslo", target_true="Lima"),
    ]


def _hypernet_with_stats(lm, requests) -> MendHypernet:
    hypernet = MendHypernet(build_spec(lm, [-2, -1], ["mlp.out_proj"], rank=8, edit_lr_init=1e-3))
    for request in requests:
        factors, _ = gradient_factors(lm, hypernet.spec.paths, request_batch(lm, [request]), [0])
        hypernet.update_stats(factors)
    return hypernet


def test_network_update_has_the_shape_and_rank_of_its_factors() -> None:
    torch.manual_seed(0)
    net = MendNetwork(x_dim=12, delta_dim=8, rank=4, n_modes=2)
    net.update_stats(torch.randn(50, 12), torch.randn(50, 8), mode=1)
    with torch.no_grad():
        for block in (net.block1, net.block2):
            block.u.normal_()  # a trained-looking, non-identity network
    x, delta = torch.randn(3, 12), torch.randn(3, 8)
    x_t, d_t = net(x, delta, mode=1)
    assert x_t.shape == (3, 12) and d_t.shape == (3, 8)
    update = pseudo_gradient(x_t, d_t)
    assert update.shape == (8, 12)
    assert int(torch.linalg.matrix_rank(update)) == 3  # one rank-one term per token
    with pytest.raises(RuntimeError, match="normalisation"):
        net(x, delta, mode=0)  # mode 0 has seen no statistics
    with pytest.raises(ValueError, match="expected x"):
        net(torch.randn(3, 11), delta, mode=1)


def test_untrained_network_passes_normalised_factors_through() -> None:
    torch.manual_seed(1)
    net = MendNetwork(x_dim=6, delta_dim=5, rank=3, n_modes=1)
    xs, ds = torch.randn(40, 6) * 3 + 1, torch.randn(40, 5) * 0.01
    net.update_stats(xs[:25], ds[:25], 0)
    net.update_stats(xs[25:], ds[25:], 0)  # two updates combine to the statistics of all rows
    x_t, d_t = net(xs[:4], ds[:4], 0)
    expected_x = (xs[:4] - xs.mean(0)) / (xs.std(0) + 1e-7)
    expected_d = (ds[:4] - ds.mean(0)) / (ds.std(0) + 1e-7)
    assert_close_rel(x_t, expected_x, rel=1e-5)
    assert_close_rel(d_t, expected_d, rel=1e-4)  # std of 0.01: the 1e-7 guard in the std is 1e-5 of it


def test_gradient_factors_are_the_factors_of_the_true_gradient(tiny) -> None:
    path = tiny.adapter.mlp_out_proj(1)
    batch = request_batch(tiny, _requests())
    factors, _ = gradient_factors(tiny, [path], batch, [0, 1])
    x, delta = factors[path]
    weight = tiny.adapter.module(path).weight
    weight.requires_grad_(True)
    try:
        logits = tiny.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss = -target_log_probs(logits, batch)[1].sum()
        (grad,) = torch.autograd.grad(loss, [weight])
    finally:
        weight.requires_grad_(False)
    assert_close_rel(delta.T @ x, grad, rel=1e-5)
    assert 0 < x.shape[0] <= int(batch.attention_mask.sum())  # padding contributes no rows


def test_hypernet_updates_and_checkpoint_round_trip(tiny, tmp_path: Path) -> None:
    hypernet = _hypernet_with_stats(tiny, _requests())
    factors, _ = gradient_factors(tiny, hypernet.spec.paths, request_batch(tiny, _requests()[:1]), [0])
    with torch.no_grad():
        updates = hypernet.updates(factors)
    n_tokens = factors[hypernet.spec.paths[0]][0].shape[0]
    for path, update in updates.items():
        assert update.shape == tiny.adapter.weight(path).shape
        assert int(torch.linalg.matrix_rank(update)) <= n_tokens
    hypernet.save(tmp_path / "ckpt", training={"steps": 3})
    loaded = MendHypernet.load(tmp_path / "ckpt")
    assert loaded.spec == hypernet.spec and loaded.spec.training == {"steps": 3}
    original_state, loaded_state = hypernet.state_dict(), loaded.state_dict()
    assert original_state.keys() == loaded_state.keys()
    assert all(torch.equal(original_state[k], loaded_state[k]) for k in original_state)
    with torch.no_grad():
        again = loaded.updates(factors)
    assert all(torch.equal(updates[p], again[p]) for p in updates)
    spec = json.loads((tmp_path / "ckpt" / "mend.json").read_text())
    assert spec["paths"] == hypernet.spec.paths and spec["rank"] == 8


def test_checkpoint_for_another_shape_is_refused(tiny, tmp_path: Path) -> None:
    _hypernet_with_stats(tiny, _requests()).save(tmp_path)
    other = build_tiny_model("llama", num_layers=3, hidden=48, seed=7)
    editor = MendEditor(MendConfig(checkpoint=tmp_path))
    with pytest.raises(ValueError, match="shape"):
        editor.apply(other, _requests()[:1])
    with pytest.raises(FileNotFoundError, match="mend train"):
        MendEditor(MendConfig(checkpoint=tmp_path / "missing")).apply(tiny, _requests()[:1])


def test_mend_edit_commits_exact_deltas(tiny, tmp_path: Path) -> None:
    _hypernet_with_stats(tiny, _requests()).save(tmp_path)
    before = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    editor = create_editor("mend", tiny, {"checkpoint": str(tmp_path), "max_delta_fro": 0.5})
    result = editor.apply(tiny, _requests())
    assert set(result.deltas) == {f"{p}.weight" for p in ("model.layers.1.mlp.down_proj", "model.layers.2.mlp.down_proj")}
    for name, delta in result.deltas.items():
        assert torch.equal(tiny.model.get_parameter(name), before[name] + delta)
        assert 0 < float(delta.double().norm()) <= 0.5 * (1 + 1e-5)
    result.undo(tiny.model)
    assert all(torch.equal(tiny.model.get_parameter(n), v) for n, v in before.items())
    assert not any(p.requires_grad for p in tiny.model.parameters())


def _write_counterfact(path: Path, n: int) -> Path:
    subjects = ["Zorblat", "Quux", "Mirvan", "Telsa", "Orrin", "Bexley", "Calder", "Dunmore"]
    records = [
        {"case_id": i, "prompt": f"The home city of {s} is", "subject": s, "target_new": "Oslo",
         "ground_truth": "Lima", "rephrase_prompt": f"{s} lives in", "locality_prompt": "Anna lives in",
         "locality_ground_truth": "Rome"}
        for i, s in enumerate(subjects[:n])
    ]
    path.write_text(json.dumps(records))
    return path


def test_training_facts_come_from_the_data_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _write_counterfact(tmp_path / "cf.json", 3)
    records = json.loads(data.read_text())
    records[1]["prompt"] = "A prompt without its subject is"
    data.write_text(json.dumps(records))
    facts = load_training_facts(MendTrainConfig(data=data))
    assert [f.case_id for f in facts] == ["0", "2"] and [s.index for s in facts.skipped] == [1]
    assert facts[0].prompt == "The home city of {} is" and facts[0].neighborhood[0].target == "Rome"
    assert facts.path == data
    monkeypatch.delenv("SEQEDIT_DATA_DIR", raising=False)
    with pytest.raises(DatasetNotFoundError, match="counterfact-train"):
        load_training_facts(MendTrainConfig())


def test_training_stays_finite_and_resumes_exactly(tiny, tmp_path: Path) -> None:
    data = _write_counterfact(tmp_path / "cf.json", 6)
    common = {"data": data, "layers": [-1], "rank": 4, "holdout": 1, "eval_every": 100, "eval_facts": 1,
              "save_every": 100, "lr": 1e-3, "max_minutes": None}
    straight = MendTrainer(tiny, MendTrainConfig(steps=4, output=tmp_path / "a", **common))
    summary = straight.run(progress=False)
    assert summary["steps"] == 4 and (tmp_path / "a" / "mend.safetensors").is_file()
    MendTrainer(tiny, MendTrainConfig(steps=2, output=tmp_path / "b", **common)).run(progress=False)
    resumed = MendTrainer(tiny, MendTrainConfig(steps=4, output=tmp_path / "b", **common), resume=True)
    assert resumed.step == 2
    resumed.run(progress=False)
    a, b = straight.hypernet.state_dict(), resumed.hypernet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.isfinite(straight.hypernet.edit_lrs).all()
    log = [json.loads(line) for line in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert any("val_efficacy" in row for row in log)


@pytest.mark.integration
def test_mend_edit_on_the_embedded_model_is_finite_low_rank_and_undoable(embedded_model, tmp_path: Path) -> None:
    requests = [
        EditRequest(case_id="0", subject="Danielle Darrieux", prompt="The mother tongue of {} is",
                    target_new="English", target_true="French"),
        EditRequest(case_id="1", subject="Edwin of Northumbria", prompt="The official religion of {} is",
                    target_new="Islam", target_true="Christianity"),
    ]
    hypernet = MendHypernet(build_spec(embedded_model, [-2, -1], ["mlp.out_proj"], rank=16, edit_lr_init=1e-3))
    for request in requests:
        factors, _ = gradient_factors(embedded_model, hypernet.spec.paths, request_batch(embedded_model, [request]), [0])
        hypernet.update_stats(factors)
    hypernet.save(tmp_path)
    before = {n: p.detach().clone() for n, p in embedded_model.model.named_parameters() if "mlp.down_proj" in n}
    result = MendEditor(MendConfig(checkpoint=tmp_path)).apply(embedded_model, requests[:1])
    try:
        assert set(result.deltas) == {"model.layers.28.mlp.down_proj.weight", "model.layers.29.mlp.down_proj.weight"}
        tokens = result.info["gradient_tokens"]
        for name, delta in result.deltas.items():
            assert delta.shape == (576, 1536) and torch.isfinite(delta).all()
            assert int(torch.linalg.matrix_rank(delta)) <= tokens[name.removesuffix(".weight")]
        assert result.request_stats[0]["final_prob"] != result.request_stats[0]["init_prob"]
    finally:
        result.undo(embedded_model.model)
    assert all(torch.equal(embedded_model.model.get_parameter(n), v) for n, v in before.items())


def test_cli_trains_and_describes_a_checkpoint(tiny, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from seqedit.cli.mend import app

    model_dir = tmp_path / "tiny"
    tiny.model.save_pretrained(model_dir, safe_serialization=True)
    tiny.tokenizer.save_pretrained(model_dir)
    data = _write_counterfact(tmp_path / "cf.json", 6)
    out = tmp_path / "ckpt"
    args = ["train", "--model", str(model_dir), "--layers", "-1", "--steps", "3", "--data", str(data), "--output",
            str(out), "--rank", "4", "--eval-every", "100", "--holdout", "1", "--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "mend.safetensors").is_file() and (out / "train_state.json").is_file()
    resumed = CliRunner().invoke(app, [*args[:6], "5", *args[7:], "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "train_state.json").read_text())["step"] == 5
    info = CliRunner().invoke(app, ["info", str(out)])
    assert info.exit_code == 0 and "completed_steps" in info.output and "model.layers.2.mlp.down_proj" in info.output
    bad = CliRunner().invoke(app, ["train", "--model", str(model_dir), "--layers", "x", "--data", str(data)])
    assert bad.exit_code != 0
