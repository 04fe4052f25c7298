"""The Python API (rinkit.load / .sample / .save / .denoise, rinkit.train) is the CLI's code path:
a model trained through rinkit.train samples bit-identically through the API and `rinkit sample`."""
import numpy as np
import pytest
import torch

import rinkit
from conftest import TINY
from rinkit.cli import main
from rinkit.errors import RinkitError
from rinkit.sampling import to_uint8

TRAIN = {"train.steps": 6, "train.metric_every": 0, "train.tensorboard": False}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny digits model trained through rinkit.train (the CLI's training function)."""
    overrides = [*TINY, *(f"{k}={v}".replace("False", "false") for k, v in TRAIN.items())]
    return rinkit.train("digits", overrides=overrides, run_dir=tmp_path_factory.mktemp("api") / "run",
                        progress=False)


def test_train_returns_the_run_dir_with_its_checkpoint(run):
    assert (run / "checkpoints" / "step-0000006.safetensors").is_file()
    assert (run / "config.yaml").is_file()
    import rinkit.train.trainer  # noqa: F401 - the subpackage import must not shadow the function
    assert callable(rinkit.train) and rinkit.train is __import__("sys").modules["rinkit.train"]


def test_api_samples_equal_the_cli_npz_bit_for_bit(run, tmp_path, capsys):
    assert main(["sample", "--ckpt", str(run), "--num-samples", "7", "--seed", "11", "--npz",
                 str(tmp_path / "cli.npz"), "--quiet", "--device", "cpu", "--batch-size", "3"]) == 0
    cli = np.load(tmp_path / "cli.npz")
    m = rinkit.load(run, device="cpu")
    x = m.sample(n=7, seed=11)  # another batch size: per-image seeds make it irrelevant
    assert x.shape == (7, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(to_uint8(x), cli["arr_0"])
    _, labels = m.resolve_labels(7, seed=11)
    assert np.array_equal(labels.numpy(), cli["arr_1"])
    # the same through sample_to_files, and the grid path of `rinkit sample` through .save
    assert np.array_equal(np.load(m.sample_to_files(7, 11, npz=tmp_path / "api.npz")["npz"])["arr_0"], cli["arr_0"])


def test_grid_and_save_match_the_cli(run, tmp_path):
    assert main(["sample", "--ckpt", str(run), "--class", "3,5", "--per-class", "2", "--seed", "2",
                 "--out", str(tmp_path / "cli"), "--device", "cpu", "--steps", "3"]) == 0
    m = rinkit.load(run, device="cpu")
    x = m.sample(classes=[3, 5], per_class=2, seed=2, steps=3)
    files = m.save(x, tmp_path / "api")
    assert [f.name for f in files] == ["api.png"]
    from PIL import Image
    assert np.array_equal(np.asarray(Image.open(files[0])), np.asarray(Image.open(tmp_path / "cli.png")))


def test_labels_and_sampler_overrides(run):
    m = rinkit.load(run, device="cpu")
    a = m.sample(labels=[1, 2], seed=0, sampler="ddim", steps=2)
    b = m.sample(labels=[1, 2], seed=0, sampler="ddim", steps=2, batch_size=1)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)  # per-image seeds; float sums may differ by batch
    assert not torch.equal(a, m.sample(labels=[1, 2], seed=1, sampler="ddim", steps=2))
    with pytest.raises(RinkitError, match="class 10 out of range for a model with 10 classes"):
        m.sample(labels=[10])
    with pytest.raises(RinkitError, match="sampler"):
        m.sample(n=1, steps=0)


def test_denoise_is_one_sampler_step(run):
    """.denoise is what the samplers call: a last step from pure noise gives the sampler's x0."""
    from rinkit.diffusion.samplers import denoise
    m = rinkit.load(run, device="cpu")
    x_t = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x0, eps, latents = m.denoise(x_t, 0.3, labels=[0, 1, 2])
    ref = denoise(m.model, m.diffusion, x_t, torch.full((3,), 0.3), torch.tensor([0, 1, 2]))
    assert torch.equal(x0, ref[0]) and torch.equal(latents, ref[2])
    assert latents.shape == (3, m.cfg.model.num_latents, m.cfg.model.latent_dim)
    # x_t, x0 and eps are consistent: x_t = sqrt(g) x0 + sqrt(1-g) eps
    torch.testing.assert_close(0.3 ** 0.5 * x0 + 0.7 ** 0.5 * eps, x_t, atol=1e-5, rtol=1e-5)


def test_ema_false_loads_the_raw_weights(run):
    ema, raw = rinkit.load(run, device="cpu"), rinkit.load(run, device="cpu", ema=False)
    diff = [k for k, v in ema.model.state_dict().items() if not torch.equal(v, raw.model.state_dict()[k])]
    assert diff  # after 6 steps at decay 0.995 the EMA differs from the raw weights


def test_bad_sources_raise_the_cli_one_line_messages(tmp_path, capsys):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x80\x04garbage-pickle")
    trunc = tmp_path / "t.safetensors"
    trunc.write_bytes((1000).to_bytes(8, "little") + b'{"a":1}')
    for src in (tmp_path / "missing.safetensors", bad, trunc, "no-such-model"):
        with pytest.raises(RinkitError) as e:
            rinkit.load(src, device="cpu")
        assert main(["sample", "--ckpt", str(src), "--device", "cpu"]) == 2
        assert capsys.readouterr().err.strip() == f"rinkit: error: {e.value}"
    assert "shipped: " in str(e.value)  # an unknown name lists the shipped models
    for name in rinkit.shipped_models():
        assert name in str(e.value)


def test_train_from_a_dict_and_config(tmp_path, tiny_cfg):
    cfg = tiny_cfg("train.steps=2", "train.metric_every=0", "train.tensorboard=false")
    a = rinkit.train(cfg, run_dir=tmp_path / "a", progress=False)
    b = rinkit.train(cfg.to_dict(), {"train.steps": 2}, run_dir=tmp_path / "b", progress=False)
    wa = rinkit.load(a, "cpu").model.state_dict()
    wb = rinkit.load(b, "cpu").model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # the same training, whichever way it was given
    with pytest.raises(RinkitError, match="train.steps"):
        rinkit.train(cfg, {"train.steps": -1}, run_dir=tmp_path / "c")
