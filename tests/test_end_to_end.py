"""A real (small) training run on the built-in digits: the loss must fall and samples must beat
noise on digits-FID. The default preset's model, 600 steps (~3 minutes on 2 CPU cores). Class
fidelity is checked by the README's full run, not here: it emerges after ~1,000 steps."""
import pytest
import torch

from rinkit.config import load_config
from rinkit.train.trainer import train


@pytest.mark.slow
def test_digits_run_learns(tmp_path):
    cfg = load_config("digits", None, [
        "train.steps=600", "train.warmup_steps=50", "train.ema_decay=0.98", "train.ckpt_every=1000",
        "train.metric_every=0", "train.tensorboard=false", "sampler.name=ddim", "sampler.steps=20",
        "train.eval_samples=300"])
    res = train(cfg, run_dir=tmp_path, progress=False)
    first, last = sum(res.losses[:20]) / 20, sum(res.losses[-20:]) / 20
    assert last < 0.6 * first, (first, last)
    from rinkit_plugins.image.digits_metric import digits_fid
    noise = digits_fid(torch.randn(300, 1, 8, 8).clamp(-1, 1))
    assert res.metrics["digits_fid"] < 0.5 * noise, (res.metrics, noise)
