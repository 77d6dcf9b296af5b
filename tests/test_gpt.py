"""The causal decoder-only GPT: shapes, causal masking, DFA's wiring on it, every rule training it."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from beyondbp import models, rules
from beyondbp.errors import ConfigError
from beyondbp.generate import sample, sample_text
from beyondbp.models.gpt import GPT

V, T = 11, 16



def expected_points(model, mode="macro", embed=False):
    """DFA's feedback points for the gpt model, written out by hand (TinyDFA's placements)."""
    points = ["emb_out"] if embed else []
    for i in range(model.n_layer):
        if mode == "micro":
            points += [f"blocks.{i}.attn_res", f"blocks.{i}.mlp.act"]
        points.append(f"blocks.{i}")
    return points

def tiny(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    opts = dict(n_layer=2, n_head=2, d_model=16)
    opts.update(kw)
    return GPT((T,), V, **opts)


def tokens(n: int = 3, t: int = T, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (n, t), generator=torch.Generator().manual_seed(seed))


# -- the model -------------------------------------------------------------------------------------
def test_shapes_names_and_registry():
    model = models.build("gpt", (T,), V, n_layer=3, n_head=2, d_model=16)
    assert isinstance(model, GPT)
    assert model.input_shape == (T,) and model.num_classes == V and model.context == T
    out = model(tokens(4, T - 3))
    assert out.shape == (4, T - 3, V)
    names = dict(model.named_modules())
    for n in ("tok_emb", "pos_emb", "emb_out", "ln_f", "head", "blocks.2", "blocks.0.attn.qkv",
              "blocks.0.attn.proj", "blocks.0.attn_res", "blocks.0.mlp.fc", "blocks.0.mlp.act", "blocks.0.mlp.proj"):
        assert n in names, n
    layout = model.structure()  # the structure protocol: names only, no rule in sight
    assert layout["blocks"] == ["blocks.0", "blocks.1", "blocks.2"] and layout["embedding"] == "emb_out"
    assert layout["block_inner"][0] == ["blocks.0.attn_res", "blocks.0.mlp.act"]
    assert layout["hidden"] == "ln_f" and layout["head"] == "head"
    assert expected_points(model, "micro", embed=True)[:4] == ["emb_out", "blocks.0.attn_res", "blocks.0.mlp.act", "blocks.0"]


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(d_model=15, n_head=2), "divisible"),
        (dict(norm="middle"), "norm"),
        (dict(attention="flash"), "attention"),
        (dict(n_layer=0), "n_layer"),
        (dict(dropout=1.0), "dropout"),
    ],
)
def test_bad_options(kw, match):
    with pytest.raises(ConfigError, match=match):
        tiny(**kw)


def test_refuses_too_long_input():
    with pytest.raises(ConfigError, match="context"):
        tiny()(tokens(1, T + 1))


def test_tied_head_shares_the_embedding():
    model = tiny(tie_weights=True)
    assert model.head.weight is model.tok_emb.weight
    assert model.num_parameters() == tiny(tie_weights=False).num_parameters() - V * 16


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("attention", ["explicit", "sdpa"])
def test_causal_masking(norm, attention):
    model = tiny(norm=norm, attention=attention).double()
    x = tokens(2)
    base = model(x)
    for j in (1, 7, T - 1):
        x2 = x.clone()
        x2[:, j] = (x2[:, j] + 1) % V
        out = model(x2)
        # changing token j never changes the logits of earlier positions ...
        assert torch.equal(out[:, :j], base[:, :j])
        # ... and does change position j itself (the test would notice a model ignoring its input)
        assert (out[:, j] - base[:, j]).abs().max() > 1e-6


def test_sdpa_and_explicit_attention_agree():
    a = tiny(attention="explicit").double()
    b = tiny(attention="sdpa").double()
    b.load_state_dict(a.state_dict())
    x = tokens()
    assert torch.allclose(a(x), b(x), atol=1e-12, rtol=0)


def test_same_seed_same_weights():
    assert all(torch.equal(p, q) for p, q in zip(tiny(3).parameters(), tiny(3).parameters()))


# -- DFA on the GPT --------------------------------------------------------------------------------
def _capture_dfa(model: GPT, watch: list[str], error_at: str, **dfa_opts):
    """Attach DFA; return (learner, grads at each point's output, error at error_at)."""
    modules = dict(model.named_modules())
    grads: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, args, out):
            outputs[name] = out
            out.register_hook(lambda g: grads.__setitem__(name, g))
        return hook

    # hooks registered before attach see the tensor DFA detaches
    for name in [*watch, error_at]:
        modules[name].register_forward_hook(keep(name))
    learner = rules.get("dfa", **dfa_opts).attach(model)
    return learner, grads, outputs


@pytest.mark.parametrize("mode", ["macro", "micro"])
@pytest.mark.parametrize("embed", [False, True])
def test_dfa_gradient_at_each_point_is_the_projected_error(mode, embed):
    model = tiny(norm="pre").double()
    points = expected_points(model, mode, embed=embed)
    learner, grads, _ = _capture_dfa(model, points, "ln_f", points=mode, embed=embed, seed=3)
    x, y = tokens(seed=4), tokens(seed=5)
    learner.estimate((x, y))
    e = grads["ln_f"]  # dL/d(last hidden state), per token, width d_model
    assert e.shape == (3, T, 16)
    B = learner.rule_state()["shared"]
    assert learner.shared and B.shape == (16, 64 if mode == "micro" else 16)
    for name in points:
        g = grads[name]
        width = g.shape[-1]
        expected = (e.reshape(-1, 16) @ B[:, :width]).reshape(g.shape)
        assert torch.allclose(g, expected, rtol=1e-12, atol=1e-15), name
    # the shared matrix is Gaussian and scaled by 1/sqrt(widest point)
    assert abs(float(B.std()) * math.sqrt(B.shape[1]) - 1.0) < 0.35


def test_dfa_uniform_init_and_logits_error():
    model = tiny().double()
    learner, grads, _ = _capture_dfa(model, expected_points(model, "macro"), "head", error="logits", init="uniform")
    x, y = tokens(seed=4), tokens(seed=5)
    learner.estimate((x, y))
    e = grads["head"]
    assert e.shape == (3, T, V)
    B = learner.rule_state()["shared"]
    assert B.shape == (V, 16) and float(B.abs().max()) <= 1 / math.sqrt(16)
    for name in expected_points(model, "macro"):
        assert torch.allclose(grads[name], (e.reshape(-1, V) @ B).reshape(3, T, 16), rtol=1e-12, atol=1e-15)


def test_dfa_inside_a_block_is_backprop_of_the_projected_error_and_nothing_crosses():
    model = tiny().double()
    reference = copy.deepcopy(model)
    learner, grads, outputs = _capture_dfa(model, expected_points(model, "macro"), "ln_f")
    x, y = tokens(seed=6), tokens(seed=7)
    est = learner.estimate((x, y))
    # rebuild by hand: each block's input is detached, its output gets grads[block]
    ref = dict(reference.named_parameters())
    with torch.no_grad():
        h = reference.emb_out(reference.tok_emb(x) + reference.pos_emb(torch.arange(T)))
    inputs = [h]
    for block in reference.blocks:
        with torch.no_grad():
            inputs.append(block(inputs[-1]))
    for i, block in enumerate(reference.blocks):
        params = dict(block.named_parameters())
        out = block(inputs[i])
        g = torch.autograd.grad(out, list(params.values()), grads[f"blocks.{i}"])
        for (pname, _), gi in zip(params.items(), g):
            assert torch.allclose(est[f"blocks.{i}.{pname}"], gi, rtol=1e-10, atol=1e-14), pname
    # the head and ln_f learn by ordinary backprop from the error e
    hidden = outputs["ln_f"].detach()
    logits = reference.head(hidden)
    gh = torch.autograd.grad(torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1)), ref["head.weight"])[0]
    assert torch.allclose(est["head.weight"], gh, rtol=1e-10, atol=1e-14)
    # the embeddings learn from block 0's internal backprop (no feedback point at the embedding)
    emb = reference.tok_emb(x) + reference.pos_emb(torch.arange(T))
    out0 = reference.blocks[0](emb)
    gt = torch.autograd.grad(out0, ref["tok_emb.weight"], grads["blocks.0"])[0]
    assert torch.allclose(est["tok_emb.weight"], gt, rtol=1e-10, atol=1e-14)


def test_dfa_placement_options_and_refusals():
    model = tiny()
    learner = rules.get("dfa").attach(model)
    assert learner.points == expected_points(model, "macro") and learner.error_at == "ln_f" and learner.shared
    learner.detach()
    learner = rules.get("dfa", points="layers", shared=False).attach(model)
    assert learner.points == "layers" and learner.error_at == "ln_f" and not learner.shared
    learner.detach()
    mlp = models.build("mlp", (4,), 3, widths=(5,))
    learner = rules.get("dfa").attach(mlp)  # no suggestion: Nøkland's per-layer DFA
    assert learner.points == "layers" and learner.error_at is None and not learner.shared
    learner.detach()
    for opts in (dict(points="macro"), dict(error="hidden"), dict(embed=True)):
        with pytest.raises(ConfigError):
            rules.get("dfa", **opts).attach(mlp)
    with pytest.raises(ConfigError):
        rules.get("dfa", points="layers", embed=True)
    with pytest.raises(ConfigError):
        rules.get("dfa", error="sideways")


def _step_flops(learner, batch) -> int:
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.0)
    learner.step(batch, opt)  # creates DFA's matrix
    counter = FlopCounterMode(display=False)
    with counter:
        learner.step(batch, opt)
    return int(counter.get_total_flops())


def test_dfa_flops_against_backprop():
    """Measured matmul FLOPs of one step. Macro DFA saves no matmul: every Linear of a block still
    needs its input gradient to reach the earlier layers of the same block (and ln_1's affine
    parameters), so it costs backprop plus the one projection e·B. Micro DFA skips the MLP output
    projection's input gradient; per-layer DFA skips every Linear's input gradient."""
    n, d = 4, 32
    base = tiny(n_layer=2, d_model=d, n_head=2)
    batch = (tokens(n, seed=8), tokens(n, seed=9))
    flops = {}
    for label, name, opts in (("bp", "backprop", {}), ("macro", "dfa", {}), ("micro", "dfa", dict(points="micro")),
                              ("layers", "dfa", dict(points="layers", shared=True))):
        flops[label] = _step_flops(rules.get(name, **opts).attach(copy.deepcopy(base)), batch)
    assert flops["macro"] == flops["bp"] + 2 * n * T * d * d
    mlp_proj_input_grad = 2 * n * T * (4 * d) * d
    assert flops["micro"] == flops["bp"] - 2 * mlp_proj_input_grad + 2 * n * T * d * (4 * d)
    assert flops["layers"] < 0.85 * flops["bp"]


# -- every feedback-path rule on the GPT ----------------------------------------------------------
FEEDBACK_RULES = [n for n in ("fa", "usf", "brsf", "frsf", "kp", "pfa", "dfa") if n in rules.names()]


@pytest.mark.parametrize("name", FEEDBACK_RULES)
def test_feedback_rules_attach_to_every_linear(name):
    model = tiny()
    learner = rules.get(name).attach(model)
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(learner.trained_layers()) == linears
    est = learner.estimate((tokens(), tokens(seed=2)))
    # embeddings and LayerNorms learn from the error that reaches them
    for pname in ("tok_emb.weight", "pos_emb.weight", "blocks.0.ln_1.weight", "ln_f.weight"):
        assert pname in est and est[pname].abs().sum() > 0, pname
    learner.detach()


@pytest.mark.parametrize("name", ["backprop", *FEEDBACK_RULES])
def test_every_rule_is_deterministic_on_gpt(name):
    def train():
        model = tiny(7)
        learner = rules.get(name, seed=1).attach(model) if "seed" in rules.rule_class(name).option_names() \
            else rules.get(name).attach(model)
        opt = torch.optim.Adam(learner.optimizer_parameters(), lr=1e-2)
        losses = [learner.step((tokens(4, seed=s), tokens(4, seed=s + 50)), opt)["loss"] for s in range(3)]
        return losses, [p.detach().clone() for p in model.parameters()]

    (la, pa), (lb, pb) = train(), train()
    assert la == lb and all(torch.equal(a, b) for a, b in zip(pa, pb))
    assert la[-1] != la[0]  # it did train


@pytest.mark.parametrize("name", [n for n in ("ff", "il") if n in rules.names()])
def test_layerwise_local_rules_refuse_the_transformer(name):
    from beyondbp.errors import UnsupportedModuleError

    with pytest.raises(UnsupportedModuleError):
        rules.get(name).attach(tiny())


@pytest.fixture(scope="module")
def shakespeare():
    from beyondbp.data.text import load_shakespeare_char

    return load_shakespeare_char()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["backprop", *FEEDBACK_RULES])
def test_short_run_beats_the_unigram_baseline(name, shakespeare):
    """200 Adam steps of 16 windows × 32 characters (~100k tokens) on a 2-block, width-32 GPT.
    Embeddings start at std 1 (PyTorch's nn.Embedding default): with GPT-2's 0.02 the
    random-feedback rules sit at the unigram loss for hundreds of steps."""
    ds = shakespeare
    torch.manual_seed(0)
    model = GPT((32,), ds.vocab_size, n_layer=2, n_head=4, d_model=32, emb_std=1.0)
    learner = rules.get(name).attach(model)
    opt = torch.optim.Adam(learner.optimizer_parameters(), lr=5e-3)
    before = ds.val_loss(model, 32, batch_size=256, max_windows=256)
    for batch in ds.batches(16, 32, seed=0, steps=200):
        learner.step(batch, opt)
    after = ds.val_loss(model, 32, batch_size=256, max_windows=256)
    assert before > ds.unigram_loss()  # starts above the baseline (≈ log 65)
    assert after < ds.unigram_loss() - 0.15, (name, after, ds.unigram_loss())


def test_backprop_equals_a_plain_pytorch_loop():
    x, y = tokens(4, seed=10), tokens(4, seed=11)
    a, b = tiny(5), tiny(5)
    learner = rules.get("backprop").attach(a)
    opt_a = torch.optim.AdamW(learner.optimizer_parameters(), lr=1e-2)
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-2)
    for _ in range(5):
        la = learner.step((x, y), opt_a)["loss"]
        opt_b.zero_grad()
        loss = torch.nn.functional.cross_entropy(b(x).reshape(-1, V), y.reshape(-1))
        loss.backward()
        opt_b.step()
        assert la == float(loss.detach())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# -- sampling --------------------------------------------------------------------------------------
def test_sample_is_seeded_and_extends_the_prompt():
    model = tiny()
    prompt = tokens(1, 5)[0]
    a = sample(model, prompt, 20, seed=1)
    assert a.shape == (25,) and torch.equal(a[:5], prompt)
    assert torch.equal(a, sample(model, prompt, 20, seed=1))
    assert not torch.equal(a, sample(model, prompt, 20, seed=2))
    greedy = sample(model, prompt, 3, temperature=0)
    with torch.no_grad():
        assert int(greedy[5]) == int(model(prompt[None])[0, -1].argmax())
    # longer than the context: the model reads the last T tokens
    assert sample(model, prompt, 2 * T, top_k=3).shape == (5 + 2 * T,)
    with pytest.raises(ConfigError):
        sample(model, prompt, 3, temperature=-1)


def test_sample_text_roundtrips_through_a_codec():
    from beyondbp.data.text import TextCodec

    codec = TextCodec("char", "abcdefghijk")
    model = tiny()
    text = sample_text(model, codec, "abc", 10, seed=0)
    assert text.startswith("abc") and len(text) == 13 and set(text) <= set("abcdefghijk")


# -- language-model runs through the run loop ------------------------------------------------------
def _lm_config(tmp_path, **kw):
    from beyondbp.training import RunConfig

    path = tmp_path / "input.txt"
    if not path.exists():
        path.write_text("to be or not to be, that is the question.\n" * 40, encoding="utf-8")
    opts = dict(rule="backprop", model="gpt", model_options=dict(n_layer=1, n_head=2, d_model=16),
                data="shakespeare-char", data_dir=str(path), tokens=3000, context=16, batch_size=8, lr=1e-2,
                eval_windows=20)
    opts.update(kw)
    return RunConfig(**opts)


def test_language_model_run_uses_a_token_budget(tmp_path):
    from beyondbp.training import run

    config = _lm_config(tmp_path, checkpoint=str(tmp_path / "lm.pt"))
    result = run(config)
    assert result.steps == math.ceil(3000 / (8 * 16)) and result.tokens == result.steps * 8 * 16
    assert len(result.history) == 10 and result.history[-1]["tokens"] == result.tokens
    assert result.flops_per_token == result.flops_per_step / (8 * 16) > 0
    assert result.time_per_token is not None and result.time_per_token > 0
    base = result.data["baselines"]
    assert result.final["val_loss"] == result.final["test_loss"] < base["unigram"]
    again = run(config.replace(checkpoint=None))
    assert again.final["val_loss"] == result.final["val_loss"]  # same seed, same numbers
    from beyondbp.generate import load_language_model

    model, codec = load_language_model(tmp_path / "lm.pt")
    text = sample_text(model, codec, "to be", 30, temperature=0.5, seed=0)
    assert text.startswith("to be") and len(text) == 35


def test_language_model_run_with_steps_and_dfa(tmp_path):
    from beyondbp.training import run

    result = run(_lm_config(tmp_path, rule="dfa", tokens=None, steps=12))
    assert result.steps == 12 and result.tokens == 12 * 8 * 16 and len(result.history) == 10


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(epochs=2, tokens=None), "tokens"),
        (dict(steps=3), "either tokens or steps"),
        (dict(model="mlp", model_options={}), "gpt"),
        (dict(n_train=10), "n_train"),
        (dict(data="digits", data_dir=None, tokens=None, context=None, eval_windows=None), "gpt"),
        (dict(data="digits", data_dir=None, model="mlp", model_options={}, context=None, eval_windows=None), "tokens"),
    ],
)
def test_language_model_config_errors(tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        _lm_config(tmp_path, **kw)


def test_sampling_refuses_a_vision_checkpoint(tmp_path):
    from beyondbp import checkpoint
    from beyondbp.errors import CheckpointError
    from beyondbp.generate import load_language_model

    model = models.build("mlp", (4,), 3, widths=(5,))
    learner = rules.get("backprop").attach(model)
    checkpoint.save(tmp_path / "mlp.pt", model, learner, None, meta={"model": "mlp"})
    with pytest.raises(CheckpointError, match="vocabulary"):
        load_language_model(tmp_path / "mlp.pt")


# -- command line ----------------------------------------------------------------------------------
def _cli(capsys, *args):
    from beyondbp.cli import main

    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_cli_train_compare_and_sample(tmp_path, capsys):
    corpus = tmp_path / "input.txt"
    corpus.write_text("to be or not to be, that is the question.\n" * 40, encoding="utf-8")
    common = ["--model", "gpt", "--data", "shakespeare-char", "--data-dir", corpus, "--tokens", "2e3",
              "--n-layer", "1", "--n-head", "2", "--d-model", "16", "--context", "16", "--batch-size", "8",
              "--eval-windows", "10"]
    code, out, err = _cli(capsys, "train", *common, "--rule", "dfa", "--checkpoint", tmp_path / "g.pt")
    assert code == 0, err
    assert "val loss (nats/token)" in out and "unigram" in out and "FLOPs/token" in out
    code, out, err = _cli(capsys, "compare", *common, "--rules", "backprop,dfa,fa", "--out", tmp_path / "cmp")
    assert code == 0, err
    assert "per token, ratios to backprop" in out and "2000 tokens" in out
    code, out, err = _cli(capsys, "sample", "--checkpoint", tmp_path / "g.pt", "--prompt", "to be",
                          "--tokens", "20", "--seed", "3")
    assert code == 0, err
    assert out.startswith("to be") and len(out) == len("to be") + 20 + 1  # one character per token, newline
    _, again, _ = _cli(capsys, "sample", "--checkpoint", tmp_path / "g.pt", "--prompt", "to be",
                       "--tokens", "20", "--seed", "3")
    assert again == out
    code, _, err = _cli(capsys, "train", "--model", "mlp", "--data", "digits", "--n-layer", "2")
    assert code == 2 and err.startswith("error:") and "--n-layer" in err
