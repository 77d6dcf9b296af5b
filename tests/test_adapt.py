"""Test-time adaptation (beyondbp.adapt): corruptions, the methods' defining equations,
reliability (checkpoint untouched, episodic resets, degenerate batches, determinism), a learning
check and the ``beyondbp adapt`` command line. Small subsets only."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from beyondbp import adapt, data
from beyondbp.adapt import corruptions as corr
from beyondbp.adapt.methods import NHL, Norm, Source, Tent, split_batches
from beyondbp.cli import main
from beyondbp.errors import CheckpointError, ConfigError, DataError

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="session")
def fmnist():
    return data.load("fashion-mnist", normalize=False)


@pytest.fixture(scope="session")
def source_model(fmnist):
    """A tiny BN CNN trained for real on 3000 clean images (a few seconds; about 26% clean error)."""
    return adapt.train_source(fmnist.x_train[:3000], fmnist.y_train[:3000], channels=(8, 16, 16), epochs=3,
                              batch_size=64, seed=0)


@pytest.fixture()
def small_model():
    """An untrained BN CNN whose BatchNorm running statistics and affine parameters are not at
    their initial values (so batch statistics and γ/β updates are visible)."""
    torch.manual_seed(3)
    model = adapt.BNCNN((4, 6, 5))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 1, 28, 28))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    model.eval()
    return model


def batch(n=12, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ corruptions
@pytest.mark.parametrize("name", corr.names())
def test_corruption_is_seeded_and_keeps_shape_and_range(fmnist, name):
    x = fmnist.x_test[:16]
    a = corr.corrupt(x, name, 3, seed=7)
    b = corr.corrupt(x, name, 3, seed=7)
    assert a.shape == x.shape and a.dtype == torch.float32
    assert a.numpy().tobytes() == b.numpy().tobytes()
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(torch.round(a * 255) / 255, a)  # stored at 8 bits
    assert not torch.equal(a, x)
    if name in ("gaussian_noise", "shot_noise", "impulse_noise", "motion_blur", "elastic_transform"):
        assert not torch.equal(a, corr.corrupt(x, name, 3, seed=8))  # the seed matters where there is randomness
    # a (N, 28, 28) batch gives the same numbers
    assert torch.equal(corr.corrupt(x[:, 0], name, 3, seed=7), a[:, 0])


@pytest.mark.parametrize("name", corr.names())
def test_severity_increases_distance_to_clean_image(fmnist, name):
    x = fmnist.x_test[100:164]
    dist = [float((corr.corrupt(x, name, s, seed=1) - x).pow(2).mean()) for s in corr.SEVERITIES]
    assert all(b > a for a, b in zip(dist, dist[1:])), dist


def test_corrupt_refuses_bad_input(fmnist):
    x = fmnist.x_test[:4]
    with pytest.raises(ConfigError, match="unknown corruption"):
        corr.corrupt(x, "fog", 1)
    for bad in (0, 6, 2.5, True):
        with pytest.raises(ConfigError, match="severity"):
            corr.corrupt(x, "contrast", bad)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        corr.corrupt(x * 3 - 1, "contrast", 1)
    with pytest.raises(ConfigError):
        corr.parse_severities("0,5")
    assert corr.parse_severities("all") == [1, 2, 3, 4, 5]
    assert corr.parse_corruptions("all") == corr.names()


def test_jpeg_table_and_quantisation():
    assert np.array_equal(corr.jpeg_table(50), corr.JPEG_LUMA)  # quality 50 is the standard table
    # a constant 8x8 block has only a DC coefficient, which quantisation keeps when it is a multiple of Q[0,0]
    q = corr.jpeg_table(80)[0, 0]
    level = (q * 3 / 8 + 128) / 255  # DC = 8 * (255 x - 128) = 3 q
    img = np.full((1, 8, 8), level)
    out = corr.jpeg(img, 1, np.random.default_rng(0))
    np.testing.assert_allclose(out, img, atol=1e-12)


def test_pixelate_box_matrix_averages_areas():
    m = corr.box_resize_matrix(4, 2)
    np.testing.assert_allclose(m, [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    up = corr.box_resize_matrix(2, 4)
    np.testing.assert_allclose(up, [[1, 0], [1, 0], [0, 1], [0, 1]])


# ------------------------------------------------------------------------------ methods: math
def forward_from_scratch(model, x, gammas=None, betas=None):
    """BNCNN's forward with BatchNorm on the batch's own statistics (biased variance)."""
    bns = [model.bn1, model.bn2, model.bn3]
    gammas = gammas or [bn.weight for bn in bns]
    betas = betas or [bn.bias for bn in bns]
    h = (x - model.standardize.mean) / model.standardize.std
    for i, conv in enumerate([model.conv1, model.conv2, model.conv3]):
        h = F.conv2d(h, conv.weight, conv.bias, padding=1)
        mean = h.mean(dim=(0, 2, 3), keepdim=True)
        var = h.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        h = (h - mean) / torch.sqrt(var + bns[i].eps) * gammas[i].view(1, -1, 1, 1) + betas[i].view(1, -1, 1, 1)
        h = F.relu(h)
        h = F.max_pool2d(h, 2) if i < 2 else F.adaptive_avg_pool2d(h, 3).flatten(1)
    return h @ model.out.weight.T + model.out.bias


def test_norm_uses_batch_statistics(small_model):
    x = batch()
    before = copy.deepcopy(small_model.state_dict())
    norm = Norm(small_model)
    got = norm(x)
    torch.testing.assert_close(got, forward_from_scratch(small_model, x), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, Source(small_model)(x), atol=1e-3)  # running statistics would differ
    after = small_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the source model is untouched


def test_tent_step_is_one_adam_step_on_entropy_of_bn_affine_only(small_model):
    x = batch(16, seed=1)
    tent = Tent(small_model)
    names_before = {k: v.clone() for k, v in tent.model.state_dict().items()}
    logits = tent(x)

    # from scratch: entropy of the batch-statistics forward, gradient w.r.t. every γ, β
    bns = [small_model.bn1, small_model.bn2, small_model.bn3]
    gammas = [bn.weight.detach().clone().requires_grad_(True) for bn in bns]
    betas = [bn.bias.detach().clone().requires_grad_(True) for bn in bns]
    ref_logits = forward_from_scratch(small_model, x, gammas, betas)
    p = ref_logits.softmax(1)
    loss = -(p * torch.log(p)).sum(1).mean()
    grads = torch.autograd.grad(loss, gammas + betas)
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8
    torch.testing.assert_close(logits, ref_logits.detach(), rtol=1e-5, atol=1e-6)  # the prediction is pre-step
    for param, g, key in zip(gammas + betas, grads, [f"bn{i}.weight" for i in (1, 2, 3)] + [f"bn{i}.bias" for i in (1, 2, 3)]):
        m, v = (1 - b1) * g, (1 - b2) * g * g
        expected = param.detach() - lr * (m / (1 - b1)) / (torch.sqrt(v / (1 - b2)) + eps)
        torch.testing.assert_close(tent.model.state_dict()[key], expected, rtol=1e-6, atol=1e-8)
        assert not torch.equal(tent.model.state_dict()[key], names_before[key])
    for key, value in tent.model.state_dict().items():
        if not key.startswith(("bn1.weight", "bn2.weight", "bn3.weight", "bn1.bias", "bn2.bias", "bn3.bias")):
            assert torch.equal(value, names_before[key]), key  # nothing else moves
    assert [id(p) for p in tent.parameters()] == [id(p) for g in tent.optimizer.param_groups for p in g["params"]]


def hebbian_from_scratch(weight, inp, t_invert, lr, power):
    """SoftHebb on a 3x3 padding-1 convolution, from unfolded patches."""
    patches = F.unfold(inp, 3, padding=1)  # (N, C*9, L)
    w = weight.reshape(weight.shape[0], -1)  # (K, C*9)
    u = torch.einsum("kd,ndl->nkl", w, patches)
    s = torch.softmax(t_invert * u, dim=1)
    win = F.one_hot(u.argmax(1), w.shape[0]).permute(0, 2, 1).bool()
    y = torch.where(win, s, -s)
    delta = torch.einsum("nkl,ndl->kd", y, patches) - (y * u).sum(dim=(0, 2))[:, None] * w
    rate = lr * ((w.norm(dim=1) - 1).abs() + 1e-10) ** power
    change = rate[:, None] * delta / delta.abs().max()
    return change.reshape(weight.shape)


def test_nhl_hebbian_step_follows_the_softhebb_equation(small_model):
    x = batch(8, seed=2)
    nhl = NHL(small_model, hebb_lr=0.01, t_invert=2.0)
    w0 = nhl.model.conv1.weight.detach().clone()
    inp = (x - small_model.standardize.mean) / small_model.standardize.std
    expected = hebbian_from_scratch(w0.double(), inp.double(), 2.0, 0.01, 0.5)
    change = nhl.hebbian_update(x)
    torch.testing.assert_close(change.double(), expected, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(nhl.model.conv1.weight, w0 + change)


def test_nhl_changes_only_the_hebbian_layer_and_the_modulator(small_model):
    nhl = NHL(small_model)
    before = {k: v.clone() for k, v in nhl.model.state_dict().items()}
    assert torch.equal(nhl.model.modulator.weight[:, :, 0, 0], torch.eye(4))
    nhl(batch(10, seed=4))
    after = nhl.model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == {"conv1.weight", "modulator.weight", "modulator.bias"}


def test_nhl_with_identity_modulator_and_no_hebbian_change_predicts_like_norm(small_model):
    nhl = NHL(small_model)
    x = batch(10, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(nhl.model(x), Norm(small_model)(x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ reliability
@pytest.mark.parametrize("method", ["tent", "nhl"])
def test_episodic_mode_starts_every_batch_from_the_source(small_model, method):
    states = []
    for episodic in (True, False):
        adapter = adapt.make(method, small_model, episodic=episodic)
        initial = copy.deepcopy(adapter.model.state_dict())
        seen = []
        original = adapter._adapt_and_predict

        def spy(x, adapter=adapter, seen=seen, original=original):
            seen.append((copy.deepcopy(adapter.model.state_dict()), copy.deepcopy(adapter.optimizer.state_dict()["state"])))
            return original(x)

        adapter._adapt_and_predict = spy
        for i in range(3):
            adapter(batch(8, seed=10 + i))
        same = [all(torch.equal(s[k], initial[k]) for k in initial) and opt == {} for s, opt in seen]
        states.append(same)
    assert states[0] == [True, True, True]  # episodic: the source state before each batch
    assert states[1] == [True, False, False]  # online: the state carries over (so the check can fail)
    # the source's own parameters are those the episodic adapter starts from
    src = small_model.state_dict()
    for k, v in adapt.make(method, small_model, episodic=True).model.state_dict().items():
        if k in src:
            assert torch.equal(v, src[k])


@pytest.mark.parametrize("method", ["norm", "tent", "nhl"])
def test_batch_of_one_is_refused_by_batch_statistics_methods(small_model, method):
    adapter = adapt.make(method, small_model)
    with pytest.raises(DataError, match="at least 2 samples"):
        adapter(batch(1))
    assert adapt.make("source", small_model)(batch(1)).shape == (1, 10)
    assert [s.stop - s.start for s in split_batches(257, 128)] == [128, 129]  # never a final batch of one
    assert [s.stop - s.start for s in split_batches(258, 128)] == [128, 128, 2]


@pytest.mark.parametrize("method", ["source", "norm", "tent", "nhl"])
def test_batch_with_nan_is_refused_and_changes_nothing(small_model, method):
    adapter = adapt.make(method, small_model)
    before = copy.deepcopy(adapter.model.state_dict())
    x = batch(8)
    x[3, 0, 5, 5] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        adapter(x)
    after = adapter.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_adaptation_never_changes_the_source_model(small_model):
    before = copy.deepcopy(small_model.state_dict())
    for method in adapt.METHODS:
        adapter = adapt.make(method, small_model)
        for i in range(2):
            adapter(batch(8, seed=i))
    after = small_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not small_model.training


def test_same_seed_same_numbers(source_model, fmnist):
    x, y = fmnist.x_test[:300], fmnist.y_test[:300]
    runs = [adapt.benchmark(source_model, x, y, ["tent", "nhl"], ["shot_noise"], [4], batch_size=64, seed=5)
            for _ in range(2)]
    key = [(r["method"], r["error"]) for r in runs[0]["rows"]]
    assert key == [(r["method"], r["error"]) for r in runs[1]["rows"]]


# ------------------------------------------------------------------------------ learning
def test_norm_and_tent_reduce_error_under_strong_noise(source_model, fmnist):
    x, y = fmnist.x_test[:1000], fmnist.y_test[:1000]
    clean = adapt.stream_error(adapt.make("source", source_model), x, y)["error"]
    xc = adapt.corrupt(x, "gaussian_noise", 5, seed=0)
    errors = {m: adapt.stream_error(adapt.make(m, source_model), xc, y, batch_size=128)["error"]
              for m in ("source", "norm", "tent")}
    assert clean < 0.5  # the source model learned the clean task (chance: 0.9)
    assert errors["source"] > clean + 0.2  # the corruption hurts (measured: 0.26 -> 0.70)
    assert errors["norm"] < errors["source"] - 0.15, errors  # measured: 0.41
    assert errors["tent"] < errors["source"] - 0.15, errors  # measured: 0.41


# ------------------------------------------------------------------------------ command line
def cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.fixture()
def checkpoint_file(tmp_path, source_model):
    path = tmp_path / "source.pt"
    adapt.save_source(path, source_model, meta={"note": "test"})
    return path


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_cli_adapt_happy_path_leaves_checkpoint_bytes_alone(capsys, tmp_path, checkpoint_file):
    digest = sha(checkpoint_file)
    out = tmp_path / "run"
    code, stdout, err = cli(capsys, "adapt", "run", "--checkpoint", checkpoint_file, "--methods", "source,norm,tent,nhl",
                            "--corruptions", "contrast,jpeg", "--severity", "4,5", "--n-test", "200",
                            "--batch-size", "64", "--out", out, "--quiet")
    assert code == 0, err
    assert sha(checkpoint_file) == digest
    result = json.loads((out / "results.json").read_text())
    assert len(result["rows"]) == 4 * 2 * 2 and result["samples"] == 200
    assert set(result["mean"]) == {"source", "norm", "tent", "nhl"}
    assert (out / "errors.png").read_bytes()[:8] == PNG
    assert "| tent |" in (out / "table.md").read_text()
    assert "severity 5" in stdout
    # an existing --out is refused without --overwrite, replaced with it
    code, _, err = cli(capsys, "adapt", "run", "--checkpoint", checkpoint_file, "--methods", "source", "--corruptions",
                       "contrast", "--n-test", "50", "--out", out, "--quiet")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "--overwrite" in err
    code, _, err = cli(capsys, "adapt", "run", "--checkpoint", checkpoint_file, "--methods", "source", "--corruptions",
                       "contrast", "--n-test", "50", "--episodic", "--out", out, "--overwrite", "--quiet")
    assert code == 0, err
    assert json.loads((out / "results.json").read_text())["episodic"] is True



def test_cli_adapt_a_batch_larger_than_the_test_images_is_all_of_them(capsys, tmp_path):
    """As in `train`: a --batch-size beyond the test images (10,000) is not refused; the images
    are one batch, the same run as a batch of exactly --n-test."""
    path = tmp_path / "source.pt"
    torch.manual_seed(0)
    adapt.save_source(path, adapt.BNCNN((2, 2, 2)))
    errors = {}
    for batch in ("40", "20000"):
        out = tmp_path / f"b{batch}"
        code, _, err = cli(capsys, "adapt", "run", "--checkpoint", path, "--methods", "source,norm", "--corruptions",
                           "contrast", "--severity", "1", "--n-test", "40", "--batch-size", batch, "--out", out, "--quiet")
        assert code == 0, err
        result = json.loads((out / "results.json").read_text())
        assert result["samples"] == 40
        # the batch the methods were given (all 40 images), and the one asked for
        assert (result["batch_size"], result["batch_size_requested"]) == (40, int(batch))
        assert "batch 40," in (out / "table.md").read_text()
        errors[batch] = [(r["method"], r["error"]) for r in result["rows"]]
    assert errors["20000"] == errors["40"] and len(errors["40"]) == 2

@pytest.mark.parametrize("args, words", [
    (["--corruptions", "fog"], "unknown corruption 'fog'"),
    (["--methods", "source,bn"], "unknown method 'bn'"),
    (["--severity", "6"], "severit"),
    (["--severity", "0"], "severit"),
    (["--batch-size", "1"], "--batch-size"),
])
def test_cli_adapt_bad_input_exits_2_with_one_line(capsys, tmp_path, checkpoint_file, args, words):
    code, out, err = cli(capsys, "adapt", "run", "--checkpoint", checkpoint_file, "--out", tmp_path / "o", *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "o").exists()


def test_cli_adapt_missing_or_wrong_checkpoint(capsys, tmp_path):
    code, _, err = cli(capsys, "adapt", "run", "--checkpoint", tmp_path / "nope.pt", "--out", tmp_path / "o")
    assert code == 2 and "no checkpoint file" in err and err.count("\n") == 1
    code, _, err = cli(capsys, "adapt", "run", "--out", tmp_path / "o")
    assert code == 2 and "--checkpoint" in err
    with pytest.raises(CheckpointError, match="not an adaptation source model"):
        from beyondbp import checkpoint as ck

        ck.save(tmp_path / "other.pt", torch.nn.Linear(2, 2))
        adapt.load_source(tmp_path / "other.pt")


def test_cli_train_source_and_gallery(capsys, tmp_path):
    ck = tmp_path / "src.pt"
    code, out, err = cli(capsys, "adapt", "source", "--checkpoint", ck, "--n-train", "300", "--epochs", "1",
                         "--channels", "4,4,4", "--quiet")
    assert code == 0, err
    model, meta = adapt.load_source(ck)
    assert meta["n_train"] == 300 and 0 <= meta["clean_test_error"] <= 1 and model.channels == (4, 4, 4)
    code, _, err = cli(capsys, "adapt", "source", "--checkpoint", ck, "--n-train", "300", "--quiet")
    assert code == 2 and "already exists" in err
    png = tmp_path / "g.png"
    code, _, err = cli(capsys, "adapt", "gallery", png)
    assert code == 0, err
    assert png.read_bytes()[:8] == PNG
    code, _, err = cli(capsys, "adapt", "gallery", png)
    assert code == 2 and "already exists" in err


def test_nhl_ablations_switch_off_their_step(small_model):
    x = batch(10, seed=6)
    both_off = NHL(small_model, hebbian=False, modulate=False)
    torch.testing.assert_close(both_off(x), Norm(small_model)(x), rtol=1e-5, atol=1e-6)
    for kwargs, moved_expected in (({"hebbian": False}, {"modulator.weight", "modulator.bias"}),
                                   ({"modulate": False}, {"conv1.weight"})):
        nhl = NHL(small_model, **kwargs)
        before = {k: v.clone() for k, v in nhl.model.state_dict().items()}
        nhl(x)
        after = nhl.model.state_dict()
        assert {k for k in before if not torch.equal(before[k], after[k])} == moved_expected


def test_train_source_refuses_fewer_than_two_images(fmnist):
    """BatchNorm needs two samples per batch: one training image is refused in one sentence
    (it used to train nothing and return the untrained model)."""
    with pytest.raises(DataError, match="at least 2 training images"):
        adapt.train_source(fmnist.x_train[:1], fmnist.y_train[:1], channels=(4, 4, 4), epochs=1)
    with pytest.raises(DataError, match="one label per image"):
        adapt.train_source(fmnist.x_train[:10], fmnist.y_train[:9], channels=(4, 4, 4), epochs=1)


def test_cli_adapt_is_three_subcommands(capsys):
    """Issue 22: adapt's three jobs are subcommands (source, run, gallery), not modes behind flags."""
    with pytest.raises(SystemExit) as info:
        main(["adapt"])
    out, _ = capsys.readouterr()
    assert info.value.code == 0
    for name in ("source", "run", "gallery"):
        assert name in out
    code, _, err = cli(capsys, "adapt", "--train-source")
    assert code == 2 and err.count("\n") == 1
