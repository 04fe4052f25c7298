import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import TINY
from rinkit.cli import main


def sets(*extra):
    return ["--set", *TINY, *extra]


def test_dry_run_prints_resolved_config(capsys):
    assert main(["train", "--dry-run", "--set", "train.steps=7"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["train"]["steps"] == 7 and cfg["name"] == "digits" and cfg["modality"] == "image"


@pytest.mark.parametrize("argv,message", [
    (["train", "--modality", "sound"], "unknown modality 'sound'"),
    (["train", "--preset", "nope"], "unknown preset 'nope'"),
    (["train", "--set", "model.widht=3"], "unknown config key 'model.widht'"),
    (["train", "--set", "train.steps=-5"], "bad config value train.steps"),
    (["sample", "--ckpt", "missing.safetensors"], "checkpoint not found"),
    (["info", "--preset", "digits", "--set", "modality_options.patch_size=3"], "not divisible"),
])
def test_bad_input_is_one_line_and_nonzero(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("rinkit: error:") and "\n" not in err


def test_pickle_passed_as_checkpoint_is_refused_without_executing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    import pickle
    bad = tmp_path / "evil.ckpt"
    bad.write_bytes(pickle.dumps(Evil()))
    out = subprocess.run([sys.executable, "-m", "rinkit", "sample", "--ckpt", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and "pickle" in out.stderr and "Traceback" not in out.stderr
    assert not marker.exists()


def test_info_reports_params_and_flops(capsys):
    import json
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] > 1e5 and info["gflops"] > 0 and info["latents"] == 10 and info["interface_tokens"] == 16
    assert sum(v for k, v in info["breakdown"].items() if k != "total") == info["params"]


def test_plugins_lists_image(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "image" in out and "digits" in out


def test_train_then_sample_grid_and_npz(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--quiet", *sets("train.steps=3")]) == 0
    assert (run / "samples.png").exists()
    assert main(["sample", "--ckpt", str(run), "--class", "3,5", "--per-class", "2", "--steps", "3",
                 "--sampler", "ddim", "--guidance", "1.5", "--out", str(tmp_path / "g")]) == 0
    assert (tmp_path / "g.png").exists()
    # --guidance-interval reaches the sampler: an interval that no step's sigma reaches draws the
    # unguided images, one that holds every step the guided ones
    outs = {}
    for name, extra in {"plain": ["--guidance", "0"], "guided": ["--guidance", "3"],
                        "never": ["--guidance", "3", "--guidance-interval", "1e6", "2e6"],
                        "always": ["--guidance", "3", "--guidance-interval", "0", "inf"]}.items():
        f = tmp_path / f"{name}.npz"
        assert main(["sample", "--ckpt", str(run), "--num", "4", "--npz", str(f), "--steps", "3", *extra]) == 0
        outs[name] = np.load(f)["arr_0"]
    assert (outs["never"] == outs["plain"]).all() and (outs["always"] == outs["guided"]).all()
    assert (outs["guided"] != outs["plain"]).any()
    assert main(["sample", "--ckpt", str(run), "--guidance-interval", "2", "1"]) == 2
    assert "guidance_interval must be" in capsys.readouterr().err
    npz = tmp_path / "s.npz"
    assert main(["sample", "--ckpt", str(run), "--num", "5", "--npz", str(npz), "--steps", "2"]) == 0
    data = np.load(npz)
    assert data["arr_0"].shape == (5, 8, 8, 1) and data["arr_0"].dtype == np.uint8
    assert data["arr_1"].shape == (5,) and data["arr_1"].max() < 10
    assert main(["sample", "--ckpt", str(run), "--class", "12"]) == 2
    assert "out of range" in capsys.readouterr().err
