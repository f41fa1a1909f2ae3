"""HuggingFace GPT-2 as an mc-engine model factory (needs ``pip install transformers``; nothing
is downloaded).

A study names one of the functions below in ``[model] factory`` (this folder goes on the
Python path, so a copy of this file next to your study file works the same)::

    [model]
    factory = "gpt2_factory:tiny"        # a small random GPT-2 (a smoke test of the mapping)
    # factory = "gpt2_factory:local"     # the GPT-2 saved in GPT2_FOLDER

    [data]
    dataset = "pydocs"                   # character tokens 0-127: fits tiny()'s vocabulary
    seq_len = 32
    limit = 64

``local()`` loads a model saved with ``save_pretrained`` (or a downloaded checkpoint folder)
with ``from_pretrained(folder)``; GPT-2's own vocabulary has 50257 BPE tokens, so its data are
GPT-2-tokenised text, an npz file whose ``x_test`` holds the token ids (N x T, int64) with
``[data] task = "language_model"``. On the tiles: every ``Conv1D`` (the attention's
``c_attn`` and ``c_proj``, the MLP's ``c_fc`` and ``c_proj``, a transposed Linear) and the
``lm_head``; digital: the token and position embeddings, the LayerNorms and the attention
products (docs/physics.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

#: Where local() looks for a saved GPT-2 (config.json and the weights); MC_GPT2_FOLDER
#: overrides it.
GPT2_FOLDER = Path(os.environ.get("MC_GPT2_FOLDER", Path(__file__).parent / "gpt2"))


class NextTokenScores(nn.Module):
    """A causal language model of ``transformers`` as mc-engine evaluates one: token ids
    N x T in, next-token scores N x T x vocabulary out (the ``logits``)."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=tokens, use_cache=False).logits


def tiny(vocab: int = 128, context: int = 64) -> nn.Module:
    """A randomly initialised GPT-2 of 2 blocks, width 32, 4 heads (seeded by the caller:
    ``mc-engine`` draws a factory's weights from the global torch generator)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab, n_positions=context, n_embd=32, n_layer=2,
                        n_head=4, attn_implementation="eager")
    return NextTokenScores(GPT2LMHeadModel(config)).eval()


def local(folder: str | Path = GPT2_FOLDER) -> nn.Module:
    """The GPT-2 saved in ``folder`` (``from_pretrained``; offline: no download is tried)."""
    from transformers import GPT2LMHeadModel

    lm = GPT2LMHeadModel.from_pretrained(folder, local_files_only=True,
                                         attn_implementation="eager")
    return NextTokenScores(lm).eval()
