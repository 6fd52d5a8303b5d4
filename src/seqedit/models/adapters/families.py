"""The adapters of the supported model families (paths checked against transformers 5 modules)."""

from __future__ import annotations

from typing import ClassVar

import torch

from seqedit.models.adapters.base import ArchitectureAdapter


class LlamaAdapter(ArchitectureAdapter):
    """Llama 2/3, Mistral, Qwen2/2.5/3, SmolLM2 and other Llama-style decoders (gated MLP, pre-norm)."""

    family = "llama"
    model_types: ClassVar[tuple[str, ...]] = ("llama", "mistral", "qwen2", "qwen3", "smollm3")
    example_models: ClassVar[tuple[str, ...]] = ("smollm2-135m", "meta-llama/Meta-Llama-3-8B", "mistralai/Mistral-7B-v0.1", "Qwen/Qwen2.5-7B")
    layers_path = "model.layers"
    mlp_name = "mlp"
    mlp_out_name = "mlp.down_proj"
    mlp_in_names = ("mlp.gate_proj", "mlp.up_proj")
    attn_name = "self_attn"
    attn_out_name = "self_attn.o_proj"
    attn_in_names = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    final_norm_path = "model.norm"


class Gemma3Adapter(LlamaAdapter):
    """Gemma 2/3 text decoders (``Gemma3ForCausalLM``): Llama layout plus a norm after each sub-layer, so
    the residual contribution of the MLP is the output of ``post_feedforward_layernorm``, not of
    ``down_proj``. (The multimodal ``Gemma3ForConditionalGeneration`` nests the text model elsewhere.)"""

    family = "gemma3"
    model_types = ("gemma3_text", "gemma2")
    example_models = ("gemma3-270m", "google/gemma-3-1b-pt")
    attn_residual_name = "post_attention_layernorm"
    mlp_residual_name = "post_feedforward_layernorm"

    def mlp_value_change(self, layer: int, value: torch.Tensor, residual_change: torch.Tensor) -> torch.Tensor:
        """Invert the post-MLP RMS norm ``N(m) = (1 + w) ⊙ m / rms(m)``: its outputs are exactly the vectors
        ``(1 + w) ⊙ u`` with ``rms(u) = 1`` (up to ``eps``), so the wanted contribution ``t = N(m) + Δ`` is
        projected onto that set, ``u = (t / (1 + w)) / rms(t / (1 + w))``, and reached by ``m' = rms(m)·u``
        (N ignores the scale; keeping ``m``'s leaves the value's magnitude unchanged). Returns ``m' - m``."""
        norm = self.module(self.mlp_residual(layer))
        gain = 1.0 + self.parameter(self.mlp_residual(layer)).detach().to(device=value.device, dtype=value.dtype)
        eps = float(getattr(norm, "eps", 1e-6))

        def rms(x: torch.Tensor) -> torch.Tensor:
            return torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)

        wanted = gain * value / rms(value) + residual_change
        unit = wanted / gain
        unit = unit / torch.sqrt(unit.pow(2).mean(-1, keepdim=True))
        return rms(value) * unit - value


class GPT2Adapter(ArchitectureAdapter):
    """GPT-2 (and GPT-2 XL, the model of the ROME/MEMIT papers); weights are Conv1D ``[in, out]``."""

    family = "gpt2"
    model_types = ("gpt2",)
    example_models = ("gpt2", "gpt2-xl")
    layers_path = "transformer.h"
    mlp_name = "mlp"
    mlp_out_name = "mlp.c_proj"
    mlp_in_names = ("mlp.c_fc",)
    attn_name = "attn"
    attn_out_name = "attn.c_proj"
    attn_in_names = ("attn.c_attn",)
    final_norm_path = "transformer.ln_f"


class GPTJAdapter(ArchitectureAdapter):
    """GPT-J 6B: attention and MLP run in parallel from the same layer norm."""

    family = "gptj"
    model_types = ("gptj",)
    example_models = ("EleutherAI/gpt-j-6B",)
    layers_path = "transformer.h"
    mlp_name = "mlp"
    mlp_out_name = "mlp.fc_out"
    mlp_in_names = ("mlp.fc_in",)
    attn_name = "attn"
    attn_out_name = "attn.out_proj"
    attn_in_names = ("attn.q_proj", "attn.k_proj", "attn.v_proj")
    final_norm_path = "transformer.ln_f"


class GPTNeoXAdapter(ArchitectureAdapter):
    """GPT-NeoX / Pythia (parallel residual by default)."""

    family = "gpt_neox"
    model_types = ("gpt_neox",)
    example_models = ("EleutherAI/pythia-410m", "EleutherAI/gpt-neox-20b")
    layers_path = "gpt_neox.layers"
    mlp_name = "mlp"
    mlp_out_name = "mlp.dense_4h_to_h"
    mlp_in_names = ("mlp.dense_h_to_4h",)
    attn_name = "attention"
    attn_out_name = "attention.dense"
    attn_in_names = ("attention.query_key_value",)
    final_norm_path = "gpt_neox.final_layer_norm"


ADAPTERS: tuple[type[ArchitectureAdapter], ...] = (
    LlamaAdapter,
    Gemma3Adapter,
    GPT2Adapter,
    GPTJAdapter,
    GPTNeoXAdapter,
)
