"""A small causal decoder-only Transformer (GPT), readable top to bottom.

Shapes: input token ids ``(N, T)`` (int64, ``T <= context``), output logits ``(N, T, vocab)``
— one tensor, so every rule's learner and the default loss (cross-entropy over the last
dimension) work unchanged. ``input_shape`` is ``(context,)`` and ``num_classes`` the vocabulary
size, like every other beyondbp model.

Layout (module names are what rules and DFA options address)::

    tok_emb   nn.Embedding(vocab, d_model)        token embedding
    pos_emb   nn.Embedding(context, d_model)      learned absolute position embedding
    drop      nn.Dropout                          on the embedding sum
    emb_out   nn.Identity                         marker: the embedding output (DFA's optional point)
    blocks.i  Block                               i = 0 .. n_layer - 1
      ln_1      nn.LayerNorm
      attn      CausalSelfAttention: qkv nn.Linear(d, 3d), proj nn.Linear(d, d)
      attn_res  nn.Identity                       marker: after attention + residual
      ln_2      nn.LayerNorm
      mlp       MLP: fc nn.Linear(d, d_ff), act nn.GELU, proj nn.Linear(d_ff, d)
    ln_f      nn.LayerNorm                        final LayerNorm: its output is the last hidden state
    head      nn.Linear(d_model, vocab, bias=False) output head (tied to tok_emb if tie_weights)

Blocks are **pre-LN** by default (``norm="pre"``, as GPT-2 and nanoGPT)::

    x = x + attn(ln_1(x));   x = attn_res(x);   x = x + mlp(ln_2(x))

``norm="post"`` gives the original Transformer's post-LN block (as in the DFA Transformer
experiments of Launay et al. 2020)::

    x = ln_1(x + attn(x));   x = attn_res(x);   x = ln_2(x + mlp(x))

Both keep the final ``ln_f`` so that the "last hidden state" is the same module either way.

Attention. ``attention="explicit"`` (the default) computes ``softmax(q kᵀ / sqrt(d_head) +
causal mask) v`` with plain matmuls: it is the easiest to read and, on the CPU, the only form
``torch.utils.flop_counter`` counts (PyTorch 2.x's CPU kernel behind
``scaled_dot_product_attention`` is missing from its FLOP table, so it would count 0).
``attention="sdpa"`` calls ``torch.nn.functional.scaled_dot_product_attention(is_causal=True)``
— the same function, faster on GPUs. Position ``t`` never sees positions after ``t``.

Rules attach from outside: the feedback-path rules replace the backward pass of every
``nn.Linear`` (``qkv``, ``proj``, ``fc``, ``mlp.proj``, ``head``); the embeddings and LayerNorms
learn by ordinary autograd from whatever error reaches them; the softmax, the causal mask, the
residual additions and GELU are differentiated exactly by autograd under every rule.

The model describes its own layout through the structure protocol (:meth:`GPT.structure`:
embedding, blocks, points inside blocks, last hidden state, head); rules that need more than
module types (DFA's block-level feedback points) read it from there.

Initialisation: Linear weights N(0, 0.02), biases 0, the two residual projections of each
block N(0, 0.02 / sqrt(2 n_layer)), LayerNorms (1, 0), as in GPT-2; token and position
embeddings N(0, ``emb_std``²) with ``emb_std=1`` (PyTorch's ``nn.Embedding`` default), not
GPT-2's 0.02. Why: with 0.02 the embedding is tiny next to what the blocks add once Adam has
moved their weights, and under the random-feedback rules (fa, usf, frsf, ...) the residual
stream then loses the identity of the input token — they sit at the unigram loss. Figures in ``bench/README.md`` ("GPT: embedding scale").
Pass ``emb_std=0.02`` for GPT-2's recipe. Construction draws from the global torch RNG: seed it
before building for reproducible weights.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import Tensor, nn

from beyondbp.errors import ConfigError
from beyondbp.options import Options, opt, parse

__all__ = ["GPT", "Block", "CausalSelfAttention", "MLP"]



class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one fused ``qkv`` projection and an output ``proj``."""

    def __init__(self, d_model: int, n_head: int, dropout: float, bias: bool, attention: str) -> None:
        super().__init__()
        self.n_head = n_head
        self.d_head = d_model // n_head
        self.attention = attention
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.attn_drop = nn.Dropout(dropout)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        # (N, T, d) -> (N, heads, T, d_head)
        q = q.view(n, t, self.n_head, self.d_head).transpose(1, 2)
        k = k.view(n, t, self.n_head, self.d_head).transpose(1, 2)
        v = v.view(n, t, self.n_head, self.d_head).transpose(1, 2)
        if self.attention == "sdpa":
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            scores = q.matmul(k.transpose(-2, -1)) * (1.0 / math.sqrt(self.d_head))
            future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
            y = self.attn_drop(scores.softmax(dim=-1)).matmul(v)
        y = y.transpose(1, 2).reshape(n, t, d)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    """``proj(act(fc(x)))`` with a GELU; ``act``'s output is the "hidden activation"."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff, bias=bias)
        self.act = nn.GELU()
        self.proj = nn.Linear(d_ff, d_model, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    """One Transformer block (pre-LN or post-LN, see the module docstring)."""

    def __init__(
        self, d_model: int, n_head: int, d_ff: int, dropout: float, bias: bool, attention: str, norm: str
    ) -> None:
        super().__init__()
        self.norm = norm
        self.ln_1 = nn.LayerNorm(d_model, bias=bias)
        self.attn = CausalSelfAttention(d_model, n_head, dropout, bias, attention)
        self.attn_res = nn.Identity()
        self.ln_2 = nn.LayerNorm(d_model, bias=bias)
        self.mlp = MLP(d_model, d_ff, dropout, bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.norm == "pre":
            x = self.attn_res(x + self.attn(self.ln_1(x)))
            return x + self.mlp(self.ln_2(x))
        x = self.attn_res(self.ln_1(x + self.attn(x)))
        return self.ln_2(x + self.mlp(x))


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"gpt: {what} must be a positive integer, got {value!r}.")
    return int(value)


class GPT(nn.Module):
    """Causal decoder-only Transformer: ``(N, T)`` token ids -> ``(N, T, vocab)`` logits.

    Args:
        input_shape: ``(context,)`` (or the int ``context``): the longest sequence it reads.
        num_classes: vocabulary size.
        n_layer, n_head, d_model: depth, heads, width (``d_model`` divisible by ``n_head``).
        d_ff: the MLP's hidden width (default ``4 * d_model``).
        dropout: on embeddings, attention weights and residual branches (default 0).
        norm: ``"pre"`` (default) or ``"post"`` LayerNorm placement.
        tie_weights: share ``head.weight`` with ``tok_emb.weight`` (default False: untied).
        bias: biases in Linear and LayerNorm layers (default True).
        attention: ``"explicit"`` (default) or ``"sdpa"``.
        emb_std: standard deviation of the initial token and position embeddings (default 1).
    """

    class Options(Options):
        n_layer: int = opt(4, "number of Transformer blocks", ge=1)
        n_head: int = opt(4, "attention heads per block (must divide d_model)", ge=1)
        d_model: int = opt(128, "width of the residual stream", ge=1)
        d_ff: int | None = opt(None, "hidden width of each block's MLP; None: 4·d_model", ge=1)
        dropout: float = opt(0.0, "dropout on embeddings, attention weights and residual branches", ge=0, lt=1)
        norm: Literal["pre", "post"] = opt("pre", "LayerNorm before each sub-layer (GPT-2) or after the residual addition")
        tie_weights: bool = opt(False, "share the output head's weight with the token embedding")
        bias: bool = opt(True, "biases in the Linear and LayerNorm layers")
        attention: Literal["explicit", "sdpa"] = opt("explicit", "attention computed step by step, or by torch's fused kernel")
        emb_std: float = opt(1.0, "std of the initial token and position embeddings (GPT-2: 0.02)", gt=0)

        @model_validator(mode="after")
        def _heads_divide_width(self) -> "GPT.Options":
            if self.d_model % self.n_head:
                raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
            return self

    def __init__(
        self,
        input_shape: int | Sequence[int] = (128,),
        num_classes: int = 256,
        n_layer: int = 4,
        n_head: int = 4,
        d_model: int = 128,
        d_ff: int | None = None,
        dropout: float = 0.0,
        norm: str = "pre",
        tie_weights: bool = False,
        bias: bool = True,
        attention: str = "explicit",
        emb_std: float = 1.0,
    ) -> None:
        super().__init__()
        shape = (input_shape,) if isinstance(input_shape, int) and not isinstance(input_shape, bool) else input_shape
        try:
            shape = tuple(shape)
        except TypeError:
            shape = ()
        if len(shape) != 1:
            raise ConfigError(f"gpt: input_shape must be (context,), one positive integer, got {input_shape!r}.")
        context = _positive(shape[0], "context")
        vocab = _positive(num_classes, "num_classes (the vocabulary size)")
        parse(
            self.Options,
            dict(n_layer=n_layer, n_head=n_head, d_model=d_model, d_ff=d_ff, dropout=dropout, norm=norm,
                 tie_weights=tie_weights, bias=bias, attention=attention, emb_std=emb_std),
            "model 'gpt'",
        )
        d_ff = 4 * d_model if d_ff is None else d_ff

        self.input_shape = (context,)
        self.num_classes = vocab
        self.context = context
        self.vocab_size = vocab
        self.n_layer, self.n_head, self.d_model, self.d_ff = n_layer, n_head, d_model, d_ff
        self.norm = norm
        self.tie_weights = tie_weights
        self.emb_std = float(emb_std)

        self.tok_emb = nn.Embedding(vocab, d_model)
        self.pos_emb = nn.Embedding(context, d_model)
        self.drop = nn.Dropout(float(dropout))
        self.emb_out = nn.Identity()
        self.blocks = nn.ModuleList(
            Block(d_model, n_head, d_ff, float(dropout), bias, attention, norm) for _ in range(n_layer)
        )
        self.ln_f = nn.LayerNorm(d_model, bias=bias)
        self.head = nn.Linear(d_model, vocab, bias=False)
        self._init_weights()
        if tie_weights:
            self.head.weight = self.tok_emb.weight
        self.register_buffer("positions", torch.arange(context), persistent=False)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=self.emb_std)
        residual_std = 0.02 / math.sqrt(2 * self.n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.proj.weight, mean=0.0, std=residual_std)

    def forward(self, idx: Tensor) -> Tensor:
        if idx.dim() != 2:
            raise ConfigError(f"gpt expects token ids of shape (batch, time), got shape {tuple(idx.shape)}.")
        t = idx.shape[1]
        if t > self.context:
            raise ConfigError(f"gpt was built for at most {self.context} tokens of context, got {t}.")
        x = self.tok_emb(idx) + self.pos_emb(self.positions[:t])
        x = self.emb_out(self.drop(x))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    # -- the structure protocol (see beyondbp.models) ----------------------------------------------
    def structure(self) -> dict[str, Any]:
        """Where things are: the embedding output (``emb_out``), the blocks (``blocks.i``), inside
        each block the outputs after attention + residual (``blocks.i.attn_res``) and after the
        MLP's hidden activation (``blocks.i.mlp.act``), the last hidden state (``ln_f``) and the
        output head (``head``)."""
        blocks = [f"blocks.{i}" for i in range(self.n_layer)]
        return {
            "embedding": "emb_out",
            "blocks": blocks,
            "block_inner": [[f"{b}.attn_res", f"{b}.mlp.act"] for b in blocks],
            "hidden": "ln_f",
            "head": "head",
        }

    def num_parameters(self, embeddings: bool = True) -> int:
        """Number of distinct parameters (a tied head counted once); ``embeddings=False`` leaves
        out the token and position embeddings."""
        seen = {id(p): p for p in self.parameters()}
        total = sum(p.numel() for p in seen.values())
        if not embeddings:
            total -= self.tok_emb.weight.numel() + self.pos_emb.weight.numel()
        return total
