"""A real (small) training run on the built-in digits: the loss must fall and samples must beat
noise on digits-FID. About a minute on 2 CPU cores."""
import pytest
import torch

from rinkit.config import load_config
from rinkit.train.trainer import train


@pytest.mark.slow
def test_digits_run_learns(tmp_path):
    cfg = load_config("digits", None, [
        "model.interface_dim=64", "model.latent_dim=64", "model.num_latents=10", "model.blocks=2",
        "model.layers_per_block=1", "model.latent_heads=4", "model.rw_heads=4",
        "modality_options.patch_size=2", "train.steps=250", "train.batch_size=64", "train.warmup_steps=20",
        "train.ema_decay=0.98", "train.ckpt_every=1000", "sampler.steps=20", "train.eval_samples=300"])
    res = train(cfg, run_dir=tmp_path, progress=False)
    first, last = sum(res.losses[:20]) / 20, sum(res.losses[-20:]) / 20
    assert last < 0.6 * first, (first, last)
    from rinkit_plugins.image.digits_metric import digits_fid
    noise = digits_fid(torch.randn(300, 1, 8, 8).clamp(-1, 1))
    assert res.metrics["digits_fid"] < 0.5 * noise, (res.metrics, noise)
    assert res.metrics["digits_acc"] > 0.3  # class-conditional samples mostly show their digit
