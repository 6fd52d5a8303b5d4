from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from seqedit.report import figures as F
from seqedit.report.style import (
    describe_layers,
    format_number,
    format_ratio,
    is_log_spaced,
    perplexity_y,
    resolve_xscale,
)


def labelled_lines(ax):
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def visible_axes(result):
    # Colour bars are axes too; keep the data panels only.
    return [ax for ax in result.figure.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def last_rows(frame, column="step"):
    return frame[frame[column] == frame[column].max()]


def test_norm_growth_one_line_per_edited_matrix_and_last_values_in_caption(edit_run):
    result = F.norm_growth_figure(edit_run, "linear")
    assert isinstance(result, F.FigureResult)
    axes = visible_axes(result)
    assert len(axes) == 3  # absolute, relative, spectral (measured every 5 steps)
    assert [len(labelled_lines(ax)) for ax in axes] == [5, 5, 5]
    final = last_rows(edit_run.norms[edit_run.norms["edited"]])
    for fro, rel in zip(final["fro"], final["fro_rel"], strict=True):
        assert format_number(fro) in result.caption
        assert f"×{format_ratio(rel)}" in result.caption
    assert "After 100 edits" in result.caption
    # The relative panel really shows relative norms: every edited matrix starts at 1.
    for line in labelled_lines(axes[1]):
        assert line.get_ydata()[0] == pytest.approx(1.0)


def test_norm_profile_marks_edited_layers_and_quotes_the_largest_change(edit_run):
    result = F.norm_profile_figure(edit_run, "linear")
    axes = visible_axes(result)
    assert [ax.get_title() for ax in axes] == ["attn_out", "mlp_out"]
    assert all(len(labelled_lines(ax)) == 2 for ax in axes)  # before and after
    assert len(axes[1].patches) == 5  # shaded bands for the edited layers 3..7
    assert len(axes[0].patches) == 0  # no attention matrix was edited
    profile = edit_run.group("profile")
    mlp_rows = profile[profile["scope"] == "mlp_out"]
    before = mlp_rows[mlp_rows["step"] == 0].set_index("layer")["value"]
    after = last_rows(mlp_rows).set_index("layer")["value"]
    layer = int((after / before - 1).abs().idxmax())
    assert f"largest change at layer {layer}" in result.caption
    assert format_number(after[layer]) in result.caption
    assert "attn_out: unchanged" in result.caption


def test_weight_distance_figure(edit_run):
    result = F.weight_distance_figure(edit_run, "linear")
    axes = visible_axes(result)
    assert [len(labelled_lines(ax)) for ax in axes] == [5, 5]
    for value in last_rows(edit_run.norms[edit_run.norms["edited"]])["dist_from_init"]:
        assert format_number(value) in result.caption


def test_edit_score_figure_has_a_panel_per_scope_and_quotes_retention(edit_run):
    result = F.edit_score_figure(edit_run, "linear")
    axes = visible_axes(result)
    assert [ax.get_title() for ax in axes] == ["latest batch (just edited)", "all edits so far (retention)"]
    assert [len(labelled_lines(ax)) for ax in axes] == [6, 6]
    assert axes[0].get_ylim() == pytest.approx((-0.02, 1.02))
    rows = edit_run.group("edit")
    retention = last_rows(rows[(rows["name"] == "score") & (rows["scope"] == "all")])["value"].iloc[0]
    assert f"score (harmonic mean) {format_number(retention)}" in result.caption
    assert "prob_compare:new>true" in result.caption  # the metric definitions are stated


def test_magnitude_and_fluency_figures(edit_run):
    magnitudes = F.edit_magnitude_figure(edit_run, "linear")
    assert [len(labelled_lines(ax)) for ax in visible_axes(magnitudes)] == [3, 3]
    fluency = F.fluency_figure(edit_run, "linear")
    assert len(labelled_lines(visible_axes(fluency)[0])) == 1
    rows = edit_run.group("edit")
    last = last_rows(rows[rows["name"] == "fluency_entropy"])["value"].iloc[0]
    assert format_number(last) in fluency.caption


def test_downstream_figure_separates_tasks_and_perplexity(edit_run):
    result = F.downstream_figure(edit_run, "log")
    axes = visible_axes(result)
    assert [len(labelled_lines(ax)) for ax in axes] == [5, 1]
    assert axes[0].get_xscale() == "symlog"
    rows = edit_run.group("downstream")
    ppl = rows[rows["name"] == "perplexity"].sort_values("step")["value"].to_numpy()
    sst2 = rows[rows["name"] == "sst2_accuracy"].sort_values("step")["value"].to_numpy()
    assert f"{format_number(ppl[0])} → {format_number(ppl[-1])} (×{format_number(ppl[-1] / ppl[0])})" in result.caption
    assert f"sst2 accuracy {format_number(sst2[0])} → {format_number(sst2[-1])}" in result.caption


@pytest.mark.parametrize(
    ("function", "panels"),
    [(F.activation_norm_figure, 2), (F.activation_similarity_figure, 4), (F.residual_share_figure, 2)],
)
def test_activation_figures_draw_one_line_per_layer(edit_run, function, panels):
    result = function(edit_run, "linear")
    axes = visible_axes(result)
    assert len(axes) == panels
    assert all(len(labelled_lines(ax)) == 12 for ax in axes)
    edited = {f"layer {layer}" for layer in range(3, 8)}
    widths = {line.get_label(): line.get_linewidth() for line in labelled_lines(axes[0])}
    assert min(widths[k] for k in edited) > max(w for k, w in widths.items() if k not in edited)


def test_activation_caption_quotes_the_most_drifted_layer(edit_run):
    result = F.activation_norm_figure(edit_run, "linear")
    rows = edit_run.group("activation")
    final = last_rows(rows[rows["name"] == "mlp_out_norm_rel"]).set_index("layer")["value"]
    layer = int(final.idxmax())
    assert f"max {format_number(final.max())} at layer {layer}" in result.caption


def test_activation_figures_say_not_measured_instead_of_empty_axes(second_edit_run):
    for function in (F.activation_norm_figure, F.activation_similarity_figure, F.residual_share_figure):
        outcome = function(second_edit_run, "linear")
        assert isinstance(outcome, F.NotMeasured)
        assert "not measured" in outcome.reason


def test_timing_figure_stacks_every_phase(edit_run):
    result = F.timing_figure(edit_run, "linear")
    stacked, bars = visible_axes(result)
    phases = F.phase_columns(edit_run.timings)
    n_areas = len([c for c in stacked.collections if isinstance(c, PolyCollection)])
    assert n_areas in (len(phases), len(phases) + 1)  # + "other" when the phases don't add up to the total
    assert len(bars.patches) == n_areas
    timings = edit_run.timings
    per_edit = timings["total_s"].sum() / timings["edits_in_step"].sum()
    assert f"Mean {format_number(per_edit)} s per edit" in result.caption
    assert "covariance (1 of 20 steps)" in result.caption
    # The one-off covariance step is clipped and labelled, not allowed to flatten the other 19 steps.
    assert stacked.get_ylim()[1] < timings["total_s"].iloc[0] / 5


def test_request_stats_figure(edit_run):
    result = F.request_stats_figure(edit_run, "linear")
    axes = visible_axes(result)
    assert [ax.get_title() for ax in axes] == ["final_prob", "target_norm", "init_norm", "steps"]
    last = edit_run.requests[edit_run.requests["step"] == edit_run.requests["step"].max()]
    assert f"final_prob {format_number(last['final_prob'].mean())}" in result.caption


def test_intervention_run_gets_its_own_norm_figures_and_loss(intervention_run):
    outcomes = {o.key: o for o in F.build_figures(intervention_run)}
    assert "edit_scores" not in outcomes and "request_stats" not in outcomes
    growth = outcomes["norm_growth"]
    assert isinstance(growth, F.FigureResult)
    assert growth.title == "Norms of the trained matrices"
    assert visible_axes(growth)[0].get_xlabel() == "training step"
    assert isinstance(outcomes["activation_norms"], F.NotMeasured)
    loss = outcomes["train_loss"]
    assert len(labelled_lines(visible_axes(loss)[0])) == 2
    rows = intervention_run.group("train")
    assert f"loss {format_number(last_rows(rows)['value'].iloc[0])}" in loss.caption
    assert "At training step 60" in loss.caption


def test_x_scale_follows_the_checkpoint_schedule(edit_run, second_edit_run):
    assert resolve_xscale("auto", F.checkpoint_x_values(edit_run)) == "log"  # 5, 10, 20, 40, 80, 100
    assert resolve_xscale("auto", F.checkpoint_x_values(second_edit_run)) == "linear"  # every 20 edits
    result = F.edit_score_figure(edit_run, "log")
    assert visible_axes(result)[0].get_xscale() == "symlog"
    assert visible_axes(result)[0].get_xlim()[0] == 0  # the unedited model stays on the axis


def test_spacing_detection_and_formatting():
    assert is_log_spaced([0, 1, 2, 4, 8, 16, 32, 64])
    assert is_log_spaced([10, 100, 1000, 10000])
    assert not is_log_spaced([0, 10, 20, 30, 40, 50, 60])
    assert not is_log_spaced([1, 2, 4])  # too few points to tell
    assert not is_log_spaced([0, 10, 20, 50, 100, 150, 200])  # two early checkpoints, then every 50
    assert resolve_xscale("linear", [1, 2, 4, 8, 16, 32]) == "linear"
    assert describe_layers([3, 4, 5, 7, 9, 10]) == "3–5, 7, 9–10"
    assert format_number(0.123456) == "0.123"
    assert format_number(1234.5) == "1,234"
    assert format_number(float("nan")) == "n/a"
    assert format_number(np.float64(2.0)) == "2"


@pytest.mark.parametrize(("values", "scale"), [([14.84, 14.98, 15.22], "linear"), ([14.8, 40.0, 900.0], "log")])
def test_perplexity_axis_is_log_only_for_a_blow_up_and_always_has_labelled_ticks(values, scale):
    fig = Figure()
    ax = fig.add_subplot()
    ax.plot([0, 10, 20], values)
    perplexity_y(ax, values)
    FigureCanvasAgg(fig).draw()
    assert ax.get_yscale() == scale
    low, high = ax.get_ylim()
    ticks = [t for t in ax.yaxis.get_majorticklabels() + ax.yaxis.get_minorticklabels() if t.get_text()]
    shown = [t for t in ticks if low <= t.get_position()[1] <= high]
    assert len(shown) >= 2


def _norm_rows_from_updates(w0, updates):
    """Norm-table rows, as the norm monitor writes them, of one matrix receiving ``updates`` in turn."""
    import pandas as pd

    rows, w = [], w0.clone()
    for step in range(len(updates) + 1):
        if step:
            w = w + updates[step - 1]
        rows.append({
            "step": step, "n_edits": 10 * step, "matrix": "m", "layer": 3, "kind": "mlp.out_proj", "edited": True,
            "fro": float(w.norm()), "fro0": float(w0.norm()), "dist_from_init": float((w - w0).norm()),
            "step_delta_fro": float(updates[step - 1].norm()) if step else 0.0,
        })
    return pd.DataFrame(rows)


def test_growth_terms_split_the_growth_exactly_and_measure_orthogonality():
    import torch

    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(12, 20, generator=gen, dtype=torch.float64)
    # Four updates orthogonal to each other and to W0 (Gram-Schmidt on flattened random matrices).
    basis = [w0.flatten() / w0.norm()]
    for _ in range(4):
        v = torch.randn(240, generator=gen, dtype=torch.float64)
        for b in basis:
            v = v - (v @ b) * b
        basis.append(v / v.norm())
    orthogonal = [3.0 * b.view(12, 20) for b in basis[1:]]
    terms = F.growth_terms(_norm_rows_from_updates(w0, orthogonal))
    last = terms.iloc[-1]
    assert last["dist_if_orthogonal"] == pytest.approx(last["dist_from_init"], rel=1e-9)  # 6 = 3·√4
    assert last["dist_from_init"] == pytest.approx(6.0, rel=1e-9)
    assert last["growth_along_w0"] == pytest.approx(0.0, abs=1e-12 * last["fro0"])  # vs ‖W0‖
    assert last["growth"] == pytest.approx(last["growth_added"], rel=1e-9)

    # The same update four times, leaning against W0: the distance is √4 = 2 times the orthogonal reference and
    # the along-W0 part is negative; the two parts still add up to the measured growth.
    same = 2.0 * basis[1].view(12, 20) - 0.05 * w0
    terms = F.growth_terms(_norm_rows_from_updates(w0, [same] * 4))
    last = terms.iloc[-1]
    assert last["dist_from_init"] / last["dist_if_orthogonal"] == pytest.approx(2.0, rel=1e-9)
    assert last["growth_along_w0"] < 0
    d = 4 * same
    expected_along = 2 * float((w0 * d).sum()) / (last["fro"] + last["fro0"])
    assert last["growth_along_w0"] == pytest.approx(expected_along, rel=1e-9)
    assert last["growth_along_w0"] + last["growth_added"] == pytest.approx(last["growth"], rel=1e-9)


def test_growth_decomposition_figure_on_an_edit_run(edit_run):
    result = F.growth_decomposition_figure(edit_run, "linear")
    assert isinstance(result, F.FigureResult)
    assert len(visible_axes(result)) == 2
    assert "orthogonal reference" in result.caption and "along W₀" in result.caption


def test_growth_factors_keep_four_decimals_up_to_two_fold():
    assert [format_ratio(v) for v in (1.00041, 1.0246, 1.15143, 0.93)] == ["1.0004", "1.0246", "1.1514", "0.9300"]
    assert format_ratio(3.456) == "3.46" and format_ratio(None) == "n/a"
