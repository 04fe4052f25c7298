"""rinkit works when installed from a wheel, not only from the editable checkout.

Builds the wheels of rinkit and of examples/rinkit-timeseries from clean copies of their sources
(`pip wheel --no-deps`), installs both non-editable (`--no-deps`) into a fresh virtual environment
whose dependencies (torch, ...) come from this one through a .pth file, and runs `rinkit` from a
folder outside the checkout: train --dry-run, info, plugins, the plugin's own preset, and a 20-step
train of the default preset. Before presets were package data, the wheel held no .yaml and
`rinkit train` found no `digits` preset. Cost: ~55 s of CPU (two isolated wheel builds and six
processes that import torch)."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JUNK = shutil.ignore_patterns(".venv", "build", "dist", "runs", "*.egg-info", "__pycache__", ".git",
                              ".pytest_cache", "tests", "benchmarks", "docs", "examples")
TRAIN = ["--quiet", "--set", "train.steps=20", "train.eval_samples=0", "train.metric_every=0",
         "train.tensorboard=false", "sampler.steps=5"]


def _sh(cmd, **kw):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.mark.slow
def test_wheels_install_into_a_fresh_venv_and_run_outside_the_checkout(tmp_path):
    # 1. wheels from clean copies (a stale build/ folder in the checkout must not leak into them)
    src, wheels = tmp_path / "src", tmp_path / "wheels"
    shutil.copytree(ROOT, src / "rinkit", ignore=JUNK)
    shutil.copytree(ROOT / "examples" / "rinkit-timeseries", src / "timeseries", ignore=JUNK)
    for s in ("rinkit", "timeseries"):
        _sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", wheels, src / s])
    built = sorted(wheels.glob("*.whl"))
    assert [w.name.split("-")[0] for w in built] == ["rinkit", "rinkit_timeseries"]
    names = zipfile.ZipFile(built[0]).namelist()
    assert "rinkit/configs/digits.yaml" in names and "rinkit_plugins/image/__init__.py" in names
    assert "rinkit_timeseries/configs/timeseries.yaml" in zipfile.ZipFile(built[1]).namelist()

    # 2. a fresh venv: the wheels, non-editable, plus this environment's packages as a fallback
    env = tmp_path / "env"
    _sh([sys.executable, "-m", "venv", "--without-pip", env])
    py = env / "bin" / "python"
    _sh([sys.executable, "-m", "pip", "--python", py, "install", "--quiet", "--no-deps", "--no-index", *built])
    purelib = Path(_sh([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    deps = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]  # not the checkout
    (purelib / "_rinkit_test_deps.pth").write_text("\n".join(deps) + "\n")

    # 3. run it from a folder that is not the checkout
    work = tmp_path / "work"
    work.mkdir()
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("RINKIT_")}
    rinkit = lambda *a: _sh([env / "bin" / "rinkit", *a], cwd=work, env=environ)  # noqa: E731
    where = _sh([py, "-c", "import rinkit, rinkit_plugins; print(rinkit.__file__, rinkit_plugins.__file__)"],
                cwd=work, env=environ)
    assert all(p.startswith(str(purelib)) for p in where.split()), where
    assert "name: digits" in rinkit("train", "--dry-run")
    assert "parameters:" in rinkit("info")
    listing = rinkit("plugins")
    assert "timeseries (rinkit-timeseries 0.1.0)" in listing and "errors:" not in listing
    assert "name: timeseries" in rinkit("train", "--modality", "timeseries", "--dry-run")  # its wheel's preset
    out = rinkit("train", *TRAIN)
    assert (work / "runs" / "digits" / "checkpoints" / "step-0000020.safetensors").exists(), out
    assert (work / "runs" / "digits" / "samples.png").exists()
