"""benchmarks.time_to_fid (issue 7, item 7(b)) and the rin-pytorch worker protocol, driven end to
end against a stand-in for the rin-pytorch package (tests/fake_rinpt) in this interpreter; the
real comparison's numbers live in benchmarks/RESULTS.md."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from benchmarks.time_to_fid import run, summarize, time_to
from rinkit.errors import RinkitError

FAKE = Path(__file__).with_name("fake_rinpt")


@pytest.fixture
def fake_rinpt(monkeypatch):
    """The worker runs under this python with the stand-in package first on its path."""
    monkeypatch.setenv("PYTHONPATH", str(FAKE))
    return sys.executable


def _pts(fids, step=10.0):
    return [{"train_seconds": step * (i + 1), "digits_fid": f} for i, f in enumerate(fids)]


def test_time_to_target_and_speedup():
    ours, theirs = _pts([100, 40, 20]), _pts([150, 90, 60])
    assert time_to(ours, 40) == 20 and time_to(ours, 39.9) == 30 and time_to(theirs, 50) is None
    s = summarize([{"points": ours}, {"points": theirs}])
    # the best FID both reach is theirs, 60: ours first gets there at 20 s, theirs at 30 s
    assert s["target"] == 60 and s["seconds"] == [20, 30] and s["speedup"] == pytest.approx(1.5)
    rows = {r["target"]: r for r in s["ladder"]}
    assert rows[100]["seconds"] == [10, 20] and rows[100]["speedup"] == pytest.approx(2)
    # only ours reaches 30: the speed-up is at least their whole time over ours
    assert rows[30]["seconds"] == [30, None] and rows[30]["speedup"] is None
    assert rows[30]["at_least"] == pytest.approx(1.0)
    assert rows[15]["seconds"] == [None, None] and rows[15]["at_least"] is None


@pytest.mark.slow
def test_time_to_fid_end_to_end_alternates_equal_time(tmp_path, fake_rinpt):
    res = run(budget=2, rounds=2, out=tmp_path / "ttf", eval_samples=20, sample_steps=2, calib_steps=1,
              rinpt_python=fake_rinpt, rinpt_other_sampler=True, rinpt_online=True, command="test",
              log=lambda m: None)
    ours, theirs = res["models"]
    assert [len(ours["points"]), len(theirs["points"])] == [2, 2]
    for a, b in zip(ours["points"], theirs["points"]):
        # rin-pytorch trains whole steps for the seconds rinkit's round took: never less
        assert b["train_seconds"] >= a["train_seconds"] > 0
        assert math.isfinite(a["digits_fid"]) and math.isfinite(b["digits_fid"])
        # the extra records: its other sampler and its weights without the EMA
        assert math.isfinite(b["digits_fid_other_sampler"]) and math.isfinite(b["digits_fid_online"])
    assert theirs["points"][-1]["step"] > theirs["points"][0]["step"] > 0
    assert ours["points"][-1]["step"] == ours["total_steps"]
    assert theirs["gflops_per_example"]["train"] > 3 * theirs["gflops_per_example"]["forward"]
    assert res["settings"]["overrides"][0] == "model.num_classes=0"
    saved = json.loads((tmp_path / "ttf.json").read_text())
    assert saved["summary"]["target"] == max(min(p["digits_fid"] for p in m["points"]) for m in saved["models"])
    md = (tmp_path / "ttf.md").read_text()
    assert "common target" in md and "without its EMA" in md
    assert (tmp_path / "ttf.png").stat().st_size > 1000


def test_per_step_harness_drives_the_worker(tmp_path, fake_rinpt):
    """Item 7(a)'s path: the harness alternates its steps with the worker's timed ops."""
    pytest.importorskip("diffusers")
    from benchmarks.harness import run as bench
    res = bench(["rin:cifar10", "rinpt:cifar10"], batch=1, reps=1, warmup=0, sample_steps=1, tiny=True,
                out=str(tmp_path), rinpt_python=fake_rinpt, log=lambda s: None, command="test")
    theirs = res["models"][1]
    assert theirs["name"].startswith("rin-pytorch")
    assert theirs["train_s"] > 0 and theirs["denoise_s"] > 0 and theirs["sample_s"] > 0


def test_bad_input_is_a_one_line_error(fake_rinpt):
    with pytest.raises(RinkitError, match="--budget"):
        run(budget=0, log=lambda m: None)
    with pytest.raises(RinkitError, match="--rinpt-sampler"):
        run(budget=1, rinpt_sampler="euler", log=lambda m: None)
    with pytest.raises(RinkitError, match="needs the built-in digits"):
        run(budget=1, preset="fashion-mnist", log=lambda m: None)
    with pytest.raises(RinkitError, match="no python at"):
        run(budget=1, rinpt_python="/nonexistent/python", log=lambda m: None)


def test_cli_reports_bad_input(capsys):
    from benchmarks.time_to_fid import main
    assert main(["--budget", "0"]) == 2
    assert "--budget" in capsys.readouterr().err
