"""Sampling text from a trained causal language model (beyondbp's ``gpt``).

:func:`sample` extends a sequence of token ids one token at a time: the model reads the last
``context`` tokens, the logits of the last position are divided by ``temperature`` (optionally
restricted to the ``top_k`` largest), and the next token is drawn from their softmax with a
``torch.Generator`` seeded by ``seed`` — the same seed gives the same text on the same device.
``temperature=0`` picks the most likely token every time (greedy decoding).

:func:`sample_text` does the same from a text prompt with a :class:`~beyondbp.data.text.TextCodec`
(or a :class:`~beyondbp.data.text.TextDataset`) and returns the prompt followed by the sample.
:func:`load_language_model` rebuilds the model and its codec from a checkpoint written by a
language-model run (``beyondbp train --model gpt ... --checkpoint PATH``); the rule's own
tensors (``*.bbp_*``) are not needed to sample and are left out.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .errors import CheckpointError, ConfigError
from .resources import check_fits
from .rules.base import is_rule_tensor
from .training.config import check_count

__all__ = ["BYTES_PER_TOKEN", "load_language_model", "sample", "sample_text"]

#: Memory a sampled token takes until the text is returned, about: its id (int64), the list of
#: ids decoding makes and the text. ``check_options`` refuses a number of tokens whose total
#: exceeds the machine's memory (:func:`beyondbp.resources.check_fits`).
BYTES_PER_TOKEN = 40


def check_options(n_tokens: Any, temperature: Any, top_k: Any, seed: Any) -> None:
    """Raise :class:`ConfigError` (one sentence) for a bad sampling setting."""
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 0:
        raise ConfigError(f"the number of tokens to sample must be a non-negative integer, got {n_tokens!r}")
    check_count(n_tokens, "number of tokens to sample", "a whole number of at least 0", low=0)
    check_fits(BYTES_PER_TOKEN * n_tokens, f"sampling {n_tokens:,} tokens",
               "ask for fewer tokens")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature < 0
    ):
        raise ConfigError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"top_k must be a positive integer or None, got {top_k!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")


def sample(
    model: nn.Module,
    idx: Tensor,
    n_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    context: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """``idx`` (``(T,)`` or ``(N, T)`` int64 ids, ``T >= 1``) followed by ``n_tokens`` sampled ids.

    ``context`` defaults to ``model.context`` (the longest input the model takes). The model is
    run in eval mode without gradients; its training mode is restored afterwards.
    ``progress(done, n_tokens)`` is called after every sampled token when given.
    """
    check_options(n_tokens, temperature, top_k, seed)
    if not isinstance(idx, Tensor) or idx.dtype != torch.int64 or idx.dim() not in (1, 2) or idx.shape[-1] < 1:
        raise ConfigError("the prompt must be a non-empty int64 tensor of token ids, shape (T,) or (N, T)")
    squeeze = idx.dim() == 1
    seq = idx[None] if squeeze else idx
    context = context if context is not None else getattr(model, "context", None)
    if context is None:
        raise ConfigError("pass context=: the model does not say how many tokens it reads")
    device = next((p.device for p in model.parameters()), seq.device)
    seq = seq.to(device)
    start = seq.shape[1]
    out = torch.empty((seq.shape[0], start + n_tokens), dtype=seq.dtype, device=device)  # filled in place
    out[:, :start] = seq
    gen = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(n_tokens):
                end = start + i
                logits = model(out[:, max(0, end - context):end])[:, -1, :].double()
                if temperature == 0:
                    nxt = logits.argmax(dim=-1, keepdim=True)
                else:
                    logits = logits / temperature
                    if top_k is not None and top_k < logits.shape[-1]:
                        kth = logits.topk(top_k, dim=-1).values[:, -1:]
                        logits = logits.masked_fill(logits < kth, float("-inf"))
                    nxt = torch.multinomial(logits.softmax(dim=-1), 1, generator=gen)
                out[:, end:end + 1] = nxt
                if progress is not None:
                    progress(i + 1, n_tokens)
    finally:
        model.train(was_training)
    return out[0] if squeeze else out


def sample_text(
    model: nn.Module,
    codec: Any,
    prompt: str,
    n_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """The prompt followed by ``n_tokens`` sampled tokens, decoded with ``codec`` (anything with
    ``encode(str) -> Tensor`` and ``decode(ids) -> str``). An empty prompt starts from token 0
    (a newline for tiny-shakespeare), which is not part of the returned text."""
    if not isinstance(prompt, str):
        raise ConfigError(f"the prompt must be a string, got {type(prompt).__name__}")
    ids = codec.encode(prompt) if prompt else torch.zeros(1, dtype=torch.int64)
    out = sample(model, ids, n_tokens, temperature=temperature, top_k=top_k, seed=seed, progress=progress)
    text = codec.decode(out[len(ids):].cpu())
    return prompt + text


def load_language_model(path: Any) -> tuple[nn.Module, Any]:
    """``(model, codec)`` from a language-model checkpoint; the model is in eval mode on the CPU."""
    from . import checkpoint, models
    from .data.text import TextCodec

    payload = checkpoint.read(path)
    meta = payload["meta"]
    if not isinstance(meta.get("codec"), dict):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds no vocabulary; sample from a checkpoint written by a "
            "language-model run (model gpt on shakespeare-char or text)"
        )
    try:
        codec = TextCodec.from_dict(meta["codec"])
        model = models.build(meta["model"], tuple(meta["input_shape"]), int(meta["num_classes"]),
                             **dict(meta.get("model_options") or {}))
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} has unusable model metadata ({exc})") from None
    state = {k: v for k, v in payload["model"].items() if not is_rule_tensor(k)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        key = (missing or unexpected)[0]
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit its own model description (key {key!r})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(f"checkpoint {str(path)!r}: {k!r} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
    model.load_state_dict(state)
    model.eval()
    return model, codec
