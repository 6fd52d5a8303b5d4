"""r-ROME (Gupta et al. 2024): one key k̄, the plain mean over the context templates, in the update's
direction, normaliser and residual: after the edit, W' k̄ = v* = W k_bare + (z - h)."""

from __future__ import annotations

import contextlib

import torch

from seqedit.editors.context import SUBJECT_SLOT
from seqedit.editors.keys import keys_and_hidden, subject_rows
from seqedit.editors.registry import create_editor
from seqedit.models import hooks


def _keys_per_template(lm, request, contexts, layer):
    """The out-projection's input at the subject's last token for each template, one forward each."""
    rows = subject_rows(lm, [request], contexts)
    module = lm.adapter.module(lm.adapter.mlp_out_proj(layer))
    keys = []
    for ids, index in zip(rows.token_ids, rows.subject_index, strict=True):
        with hooks.capture({"k": module}, "input") as store, contextlib.suppress(hooks.StopForward):
            with hooks.stop_after(module):
                lm.model(input_ids=torch.tensor([ids]), use_cache=False)
        keys.append(store["k"][0, index].double())
    return torch.stack(keys)


def test_rrome_update_maps_the_mean_key_to_the_bare_prompts_target_value(tiny_llama, requests_3, fast):
    lm, layer = tiny_llama, 2
    editor = create_editor("rome", lm, {**fast, "layers": [layer], "context_count": 3})
    contexts = editor.context_templates(lm)
    assert contexts.templates[0] == SUBJECT_SLOT and len(contexts.templates) == 4
    request = requests_3[0]
    per_template = _keys_per_template(lm, request, contexts, layer)
    k_mean, k_bare = per_template.mean(0), per_template[0]
    w0 = lm.adapter.weight(lm.adapter.mlp_out_proj(layer)).double().clone()
    result = editor.apply(lm, [request])
    delta = result.deltas[lm.adapter.mlp_out_proj(layer) + ".weight"].double()
    delta = lm.adapter.from_native(lm.adapter.mlp_out_proj(layer), delta)
    # W' k̄ - W k_bare must be the gap z - h on the bare prompt, whose norm the editor reports as
    # z_error_before (the original residual would leave W (k̄ - k_bare) on top of it).
    moved = (w0 + delta) @ k_mean - w0 @ k_bare
    gap = result.request_stats[0]["z_error_before"]
    assert float((w0 @ (k_mean - k_bare)).norm()) > 1e-2 * gap  # the two residuals really differ here
    assert abs(float(moved.norm()) - gap) < 1e-4 * gap
    assert torch.linalg.matrix_rank(delta.float(), rtol=1e-5) == 1


def test_original_rome_residual_is_an_explicit_option(tiny_llama, requests_3, fast):
    lm, layer = tiny_llama, 2
    base = {**fast, "layers": [layer], "context_count": 3}
    rrome = create_editor("rome", lm, base).apply(lm, requests_3[:1])
    rrome.undo(lm.model)
    original = create_editor("rome", lm, {**base, "residual_at": "bare_prompt"}).apply(lm, requests_3[:1])
    path = next(iter(rrome.deltas))
    difference = float((rrome.deltas[path] - original.deltas[path]).norm())
    assert difference > 1e-3 * float(rrome.deltas[path].norm())


def test_mean_key_average_is_the_plain_mean(tiny_llama, requests_3, fast):
    lm, layer = tiny_llama, 1
    editor = create_editor("rome", lm, {**fast, "layers": [layer], "context_count": 3})
    contexts = editor.context_templates(lm)
    per_template = _keys_per_template(lm, requests_3[1], contexts, layer)
    found = keys_and_hidden(lm, [requests_3[1]], contexts, [layer], average="mean")
    half = keys_and_hidden(lm, [requests_3[1]], contexts, [layer], average="bare_half")
    scale = float(per_template.abs().max())
    torch.testing.assert_close(found.keys[layer][0].double(), per_template.mean(0), atol=1e-5 * scale, rtol=0)
    expected_half = 0.5 * per_template[0] + 0.5 * per_template[1:].mean(0)
    torch.testing.assert_close(half.keys[layer][0].double(), expected_half, atol=1e-5 * scale, rtol=0)
    torch.testing.assert_close(found.bare_keys[layer][0].double(), per_template[0], atol=1e-5 * scale, rtol=0)
