"""Tiny randomly initialised models of every supported family, built in code (no downloads).

They power the fast unit tests and let users try an editor in seconds. The tokenizer is byte-level with
no merges: every UTF-8 byte is one token, so any text can be encoded and targets span several tokens,
which exercises the multi-token paths of the editors.
"""

from __future__ import annotations

from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTJConfig,
    GPTNeoXConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
)

from seqedit.models.adapters import adapter_for
from seqedit.models.loading import LoadedModel

TinyFamily = Literal["llama", "gpt2", "gptj", "gpt_neox", "gemma3"]
TINY_FAMILIES: tuple[TinyFamily, ...] = ("llama", "gpt2", "gptj", "gpt_neox", "gemma3")
_SPECIALS = ("<pad>", "<bos>", "<eos>")


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with 256 byte tokens and three special tokens (ids 256-258)."""
    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_alphabet))}
    for offset, tok in enumerate(_SPECIALS):
        vocab[tok] = len(byte_alphabet) + offset
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token=None
    )


def tiny_config(family: TinyFamily, *, vocab_size: int, num_layers: int, hidden: int) -> PretrainedConfig:
    heads = 4
    # Special ids at the top of the vocabulary, passed by name (typed arguments, unlike a ** dict).
    bos, eos, pad = vocab_size - 2, vocab_size - 1, vocab_size - 3
    if family == "llama":
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=num_layers,
            num_attention_heads=heads, num_key_value_heads=2, max_position_embeddings=256,
            tie_word_embeddings=True, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
        )
    if family == "gemma3":
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=num_layers,
            num_attention_heads=heads, num_key_value_heads=2, head_dim=hidden // heads,
            max_position_embeddings=256, sliding_window=64, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
        )
    if family == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size, n_embd=hidden, n_layer=num_layers, n_head=heads, n_positions=256,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
        )
    if family == "gptj":
        return GPTJConfig(
            vocab_size=vocab_size, n_embd=hidden, n_layer=num_layers, n_head=heads, n_positions=256,
            rotary_dim=hidden // heads // 2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
        )
    if family == "gpt_neox":
        return GPTNeoXConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=num_layers,
            num_attention_heads=heads, max_position_embeddings=256, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
        )
    raise ValueError(f"unknown tiny family '{family}'; choose one of {TINY_FAMILIES}")


def build_tiny_model(
    family: TinyFamily = "llama",
    *,
    num_layers: int = 4,
    hidden: int = 64,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """A randomly initialised model of ``family`` with a byte-level tokenizer, in eval mode, frozen."""
    tokenizer = byte_tokenizer()
    config = tiny_config(family, vocab_size=len(tokenizer), num_layers=num_layers, hidden=hidden)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    finally:
        torch.random.set_rng_state(generator_state)
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        adapter=adapter_for(model),
        name=f"tiny-{family}",
        source=f"tiny:{family}:seed={seed}",
        info={"kind": "tiny", "model_type": str(config.model_type)},
    )
