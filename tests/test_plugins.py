import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from rinkit import registry
from rinkit.build import build_model
from rinkit.config import load_config
from rinkit.errors import RinkitError

HERE = Path(__file__).parent


def test_builtin_image_plugin_registered_through_entry_points():
    names = dict(registry.plugin_names())
    assert "image" in names and names["image"].startswith("rinkit")  # from the distribution's entry point
    assert "image" in registry.modalities()
    assert ("image", "digits") in registry.datasets()


def test_unknown_modality_and_dataset_are_named():
    with pytest.raises(RinkitError, match="unknown modality 'nope'.*image"):
        registry.get_modality("nope")
    with pytest.raises(RinkitError, match="unknown dataset 'nope'"):
        registry.get_dataset("image", "nope")


@pytest.mark.parametrize("size,patch,channels", [(8, 1, 1), (8, 2, 3), (32, 4, 3), ((16, 8), 4, 2)])
def test_image_tokenizer_round_trip_shapes(size, patch, channels):
    m = registry.get_modality("image")
    opts = m.options(image_size=size, patch_size=patch, channels=channels)
    tok, detok = m.make_tokenizer(opts, 16), m.make_detokenizer(opts, 16)
    x = torch.randn(2, *m.sample_shape(opts))
    t, state = tok(x)
    h, w = opts.size
    assert t.shape == (2, (h // patch) * (w // patch), 16) and state is None
    assert detok(t, None, state).shape == x.shape


def test_unpatchify_inverts_patchify_order():
    """With the projections set to identities, detokenize(tokenize(x)) == x exactly, so the
    readout puts every patch back where the stem took it from."""
    m = registry.get_modality("image")
    opts = m.options(image_size=(8, 12), patch_size=2, channels=3)
    dim = 2 * 2 * 3
    tok, detok = m.make_tokenizer(opts, dim), m.make_detokenizer(opts, dim)
    with torch.no_grad():
        tok.patch.weight.zero_()
        tok.patch.bias.zero_()
        for c in range(3):
            for i in range(2):
                for j in range(2):
                    tok.patch.weight[(i * 2 + j) * 3 + c, c, i, j] = 1.0
        detok.proj.weight.copy_(torch.eye(dim))
        detok.proj.bias.zero_()
    tok.norm = detok.norm = torch.nn.Identity()
    tok.pos.learned.data.zero_()
    x = torch.randn(2, 3, 8, 12)
    torch.testing.assert_close(detok(tok(x)[0], None, None), x)


@pytest.mark.parametrize("kind", ["learned", "sincos", "sincos+learned"])
def test_positional_embedding_kinds(kind):
    m = registry.get_modality("image")
    tok = m.make_tokenizer(m.options(image_size=8, patch_size=2, channels=1, pos_emb=kind), 16)
    pos = tok.pos()
    assert pos.shape == (16, 16)
    assert len({tuple(r.tolist()) for r in pos.detach()}) == 16  # every position distinct
    trainable = sum(p.numel() for p in tok.pos.parameters())
    assert trainable == (0 if kind == "sincos" else 256)


def test_image_options_validated():
    with pytest.raises(RinkitError, match="patch_size"):
        build_model(load_config("digits", None, ["modality_options.patch_size=3"]))
    with pytest.raises(RinkitError, match="unknown config key 'modality_options.colour'"):
        build_model(load_config("digits", None, ["modality_options.colour=1"]))


@pytest.fixture
def installed_toy_plugin(tmp_path):
    """Install tests/toy_plugin_src.py as a distribution with an entry point, the way pip would."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(HERE / "toy_plugin_src.py", site / "rinkit_toy.py")
    dist = site / "rinkit_toy-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rinkit-toy\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[rinkit]\ntoy = rinkit_toy\n")
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(textwrap.dedent("""
        name: toy
        modality: toy
        modality_options: {length: 32, patch: 4}
        data: {dataset: waves}
        model: {interface_dim: 32, latent_dim: 32, num_latents: 6, blocks: 1, layers_per_block: 1,
                latent_heads: 2, rw_heads: 2, num_classes: 2}
        sampler: {steps: 3}
        train: {steps: 6, batch_size: 8, warmup_steps: 1, log_every: 1, ckpt_every: 3, lr: 1.0e-3}
    """))
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return cfg, env


def test_third_party_modality_trains_through_the_cli(installed_toy_plugin, tmp_path):
    cfg, env = installed_toy_plugin
    out = subprocess.run([sys.executable, "-m", "rinkit", "plugins"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "toy" in out.stdout and "rinkit-toy 0.1" in out.stdout
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "rinkit", "train", "--modality", "toy", "--config", str(cfg),
                          "--run-dir", str(run), "--quiet"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (run / "checkpoints" / "step-0000006.safetensors").exists()
    assert (run / "samples.npy").exists()
    out = subprocess.run([sys.executable, "-m", "rinkit", "sample", "--ckpt", str(run), "--per-class", "2",
                          "--out", str(tmp_path / "s")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "s.npy").exists()


def test_runtime_registered_modality_learns():
    import importlib.util
    spec = importlib.util.spec_from_file_location("rinkit_toy_rt", HERE / "toy_plugin_src.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    registry.register(mod, "toy-runtime")
    try:
        from rinkit.config import validate
        from rinkit.train.trainer import train
        cfg = validate({"name": "toy", "modality": "toy", "data": {"dataset": "waves"},
                        "model": {"interface_dim": 32, "latent_dim": 32, "num_latents": 6, "blocks": 1,
                                  "layers_per_block": 1, "latent_heads": 2, "rw_heads": 2},
                        "train": {"steps": 60, "batch_size": 32, "warmup_steps": 5, "lr": 3e-3,
                                  "ckpt_every": 1000, "ema_decay": 0.9},
                        "sampler": {"steps": 2}})
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            res = train(cfg, run_dir=d, progress=False)
        first, last = sum(res.losses[:10]) / 10, sum(res.losses[-10:]) / 10
        assert last < 0.8 * first
    finally:
        registry.unregister(mod)


def test_stem_norm_can_be_turned_off():
    m = registry.get_modality("image")
    on = m.make_tokenizer(m.options(image_size=8, patch_size=2, channels=1), 16)
    off = m.make_tokenizer(m.options(image_size=8, patch_size=2, channels=1, stem_norm=False), 16)
    assert isinstance(on.norm, torch.nn.LayerNorm) and isinstance(off.norm, torch.nn.Identity)
    x = torch.randn(2, 1, 8, 8)
    off.pos.learned.data.zero_()
    torch.testing.assert_close(off(2 * x)[0], 2 * off(x)[0] - off.patch.bias)  # linear in x without the LN


def test_plugins_import_only_the_public_plugin_module():
    """Built-in plugins and the example third-party plugin reach rinkit through rinkit.plugin
    alone (the example is installed and trained as a third-party package in test_plugin_safety),
    and no plugin imports another plugin's files: what two plugins share (the digits and their
    classifier, the token-view heatmaps) is in rinkit.plugin."""
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    example = root / "examples" / "rinkit-timeseries" / "rinkit_timeseries"
    files = [*(root / "plugins").rglob("*.py"), *example.rglob("*.py")]
    assert len(files) > 20
    bad = []
    for f in files:
        # the package a file belongs to: rinkit_plugins.<name> for a built-in plugin
        own = "rinkit_timeseries" if f.is_relative_to(example) else \
            f"rinkit_plugins.{f.relative_to(root / 'plugins').parts[0]}"
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 1:  # from ..other import x
                bad.append(f"{f.relative_to(root)}: {'.' * node.level}{node.module or ''}")
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            bad += [f"{f.relative_to(root)}: {n}" for n in names
                    if (n.split(".")[0] == "rinkit" and n != "rinkit.plugin")
                    or (n.split(".")[0] == "rinkit_plugins" and n != own and not n.startswith(own + "."))]
    assert not bad, bad
    import rinkit.plugin
    assert all(hasattr(rinkit.plugin, n) for n in rinkit.plugin.__all__)
