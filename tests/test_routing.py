"""Routing view (`rinkit routing`, Model.routing): attention probabilities recorded beside the fused
kernel, heatmaps drawn by each modality's token_view (or the token-index fallback)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from rinkit.api import Model
from rinkit.build import build_model
from rinkit.cli import main
from rinkit.config import load_config
from rinkit.engine.attention import MultiHeadAttention
from rinkit.routing import record_attention, record_trajectory, write_views

SMALL = ["model.interface_dim=32", "model.latent_dim=32", "model.num_latents=8", "model.blocks=2",
         "model.layers_per_block=1", "model.latent_heads=2", "model.rw_heads=2", "sampler.steps=3"]


def tiny(preset: str, *over: str) -> Model:
    """An untrained model of a preset, shrunk: the views do not need a trained one."""
    cfg = load_config(preset, None, [*SMALL, *over])
    torch.manual_seed(0)
    return Model(build_model(cfg).eval(), cfg, "cpu", "untrained")


def test_probabilities_are_the_weights_forward_applies():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 8, 8, heads=2)
    x, ctx = torch.randn(3, 5, 16), torch.randn(3, 7, 8)
    p = mha.probabilities(x, ctx)
    assert p.shape == (3, 2, 5, 7)
    torch.testing.assert_close(p.sum(-1), torch.ones(3, 2, 5))  # a distribution over the keys
    _, v = mha._heads(mha.kv(ctx), 2)
    o = (p @ v).transpose(1, 2).reshape(3, 5, 8)
    torch.testing.assert_close(mha.out(o), mha(x, ctx), atol=1e-5, rtol=1e-5)  # the SDPA output


def test_recording_is_off_outside_the_context():
    m = tiny("digits")
    with record_attention(m.model) as log:
        m.model(torch.zeros(2, 1, 8, 8), torch.full((2,), 0.5), torch.tensor([1, 2]))
    assert [(e["block"], e["kind"]) for e in log] == [(0, "read"), (0, "write"), (1, "read"), (1, "write")]
    m.model(torch.zeros(2, 1, 8, 8), torch.full((2,), 0.5))
    assert len(log) == 4  # hooks removed: ordinary forwards record (and cost) nothing
    assert not any(mod._forward_hooks for mod in m.model.modules())


def test_trajectory_probabilities_sum_to_one_and_match_the_sampler():
    m = tiny("digits")
    rec = record_trajectory(m, label=3, steps=4, seed=5)
    n, lat = 16, m.cfg.model.num_latents
    assert rec.read.shape == (4, 2, 2, lat, n) and rec.write.shape == (4, 2, 2, n, lat)
    torch.testing.assert_close(rec.read.sum(-1), torch.ones(rec.read.shape[:-1]))   # over the interface
    torch.testing.assert_close(rec.write.sum(-1), torch.ones(rec.write.shape[:-1]))  # over the latents
    torch.testing.assert_close(rec.received().sum(-1), torch.ones(4, 2))
    # recording does not change the trajectory: the same sample as Model.sample
    torch.testing.assert_close(rec.sample, m.sample(labels=[3], steps=4, seed=5)[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(rec.x0[-1], rec.sample)


def force_read_to(m: Model, j: int) -> None:
    """Make every block read token j only: interface tokens = positions (zero patch embedding),
    position j = ones and the rest zero, constant queries and keys k = 10 * sum(token); writes do
    nothing, so every block sees the same interface."""
    tok = m.model.tokenizer
    with torch.no_grad():
        tok.patch.weight.zero_()
        tok.patch.bias.zero_()
        tok.pos.learned.zero_()
        tok.pos.learned[j] = 1.0
        for blk in m.model.core.blocks:
            a, inner = blk.read.attn, blk.read.attn.inner
            a.q.weight.zero_()
            a.q.bias.fill_(1.0)
            a.kv.weight[:inner].fill_(10.0)
            a.kv.bias[:inner].zero_()
            for lin in (blk.write.attn.out, blk.write.mlp.fc2):
                lin.weight.zero_()
                lin.bias.zero_()


def test_a_read_forced_to_one_token_lights_exactly_that_token(tmp_path):
    m = tiny("digits")
    force_read_to(m, 6)
    rec = m.routing(1, steps=2, out=tmp_path)
    recv = rec.received()
    assert (recv.argmax(-1) == 6).all() and (recv[..., 6] > 0.999).all()
    # the image view: the heat covers patch 6 (row 1, col 2 of the 4x4 grid of 2x2 patches) only
    from rinkit_plugins.image.view import token_view
    x = rec.x0[-1:]
    hot = token_view(recv[-1, :1].numpy() / recv[-1, :1].max().item(), x, m.options).astype(int)
    cold = token_view(np.zeros((1, 16)), x, m.options).astype(int)
    changed = np.abs(hot - cold).sum(-1)[0] > 0
    expect = np.zeros((8, 8), bool)
    expect[2:4, 4:6] = True
    assert np.array_equal(changed, expect)


@pytest.mark.parametrize("preset,over", [
    ("digits", []),
    ("video-digits", ["modality_options.frame_size=16"]),
    ("audio-synth", ["modality_options.n_mels=16", "modality_options.duration=0.25"]),
    ("points-shapes", ["modality_options.num_points=64", "modality_options.num_groups=8",
                       "modality_options.group_size=8"]),
    ("points-voxels", ["modality_options.grid_size=8"]),
])
def test_every_builtin_modality_writes_its_view(preset, over, tmp_path):
    m = tiny(preset, *over)
    rec = m.routing(None, steps=2, out=tmp_path)
    names = sorted(p.name for p in rec.files)
    assert names == ["latents.png", "read.gif", "read_steps.png", "routing.json", "routing.npz"]
    meta = json.loads((tmp_path / "routing.json").read_text())
    assert "note" not in meta  # drawn over the data by the plugin, not the fallback
    img = np.asarray(Image.open(tmp_path / "read_steps.png").convert("RGB"))
    assert img.shape[0] > 100 and img.std() > 10
    assert Image.open(tmp_path / "read.gif").n_frames == 2
    assert np.load(tmp_path / "routing.npz")["read"].shape[:2] == (2, 2)


def test_a_modality_without_token_view_gets_the_token_index_plot(tmp_path, monkeypatch):
    from dataclasses import replace
    m = tiny("digits")
    m.modality = replace(m.modality, token_view=None)
    rec = m.routing(2, steps=2, out=tmp_path)
    meta = json.loads((tmp_path / "routing.json").read_text())
    assert "token-index plot" in meta["note"]
    assert (tmp_path / "read_steps.png").is_file() and rec.read.shape[-1] == 16


def test_cli_routing_and_its_errors(tmp_path, capsys):
    from rinkit.train.checkpoint import Checkpoint, save_checkpoint
    m = tiny("digits")
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "step-0000001.safetensors",
                           Checkpoint(m.cfg.to_dict(), 1, m.model.state_dict(), m.model.state_dict()))
    assert main(["routing", "--ckpt", str(ckpt), "--class", "10", "--out", str(tmp_path / "r"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err == "rinkit: error: class 10 out of range for a model with 10 classes\n"
    assert main(["routing", "--ckpt", str(tmp_path / "run"), "--class", "4", "--steps", "2",
                 "--out", str(tmp_path / "r"), "--device", "cpu"]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "r" / "read.gif").is_file()
