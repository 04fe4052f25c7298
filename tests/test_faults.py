"""Faults a user meets: Ctrl-C inside an update, writers killed mid-save, resumed logs, bad input
files and arguments, a full or read-only disk. Bad input must end as one line `rinkit: error: ...`
(exit 2) naming the problem, with nothing changed on disk; a run's progress must survive."""
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.optim.optimizer as step_hooks
from PIL import Image

from conftest import TINY
from rinkit.cli import main
from rinkit.config import DataConfig, load_config
from rinkit.errors import RinkitError, describe
from rinkit.registry import get_dataset
from rinkit.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from rinkit.train.trainer import train

RUN = ("train.steps=6", "train.ckpt_every=1000", "train.tensorboard=false")


def cfg_of(*over):
    return load_config("digits", None, [*TINY, *RUN, *over])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run every recovery is compared with."""
    torch.manual_seed(0)
    return load_checkpoint(train(cfg_of(), run_dir=tmp_path_factory.mktemp("straight"), progress=False).checkpoint)


def assert_same_state(a, b):
    assert a.step == b.step
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k
        assert torch.equal(a.ema[k], b.ema[k]), k
    for k, st in a.optimizer["state"].items():
        for name, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b.optimizer["state"][k][name])), (k, name)


def snapshot(root):
    return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(rc, err, *needles):
    err = err.strip()
    assert rc == 2, err
    assert err.startswith("rinkit: error:") and "\n" not in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


# -- signals, killed writers, resumed logs ----------------------------------------------------------

def test_ctrl_c_inside_optimizer_step_resumes_bit_identical(tmp_path, straight, monkeypatch):
    """A real SIGINT between two parameter updates of step 2 -> 3: a profiler hook counts the C
    calls of a whole optimizer step at step 1 -> 2 and raises the signal after 80 % of them (the
    per-parameter update loop) at step 2 -> 3. The update must complete and be saved as step 3;
    resuming must then end exactly where the uninterrupted run does."""
    calls, fired = {"step": 0, "c": 0, "total": 0}, []
    # The optimizer hooks are global: the plugin contract check's brief round-trip fit (its own
    # optimizer, before the loop) must not count as training steps.
    monkeypatch.setattr("rinkit.train.trainer.check_contract", lambda *a, **k: None)

    def count(frame, event, arg):
        if event == "c_call":
            calls["total"] += 1

    def prof(frame, event, arg):
        if event == "c_call":
            calls["c"] += 1
            if calls["c"] == int(0.8 * calls["total"]):
                fired.append(calls["step"])
                signal.raise_signal(signal.SIGINT)

    def pre(opt, args, kwargs):
        calls["step"] += 1
        if calls["step"] in (2, 3):  # (step 0 -> 1 also creates the state: more calls)
            sys.setprofile(count if calls["step"] == 2 else prof)

    hooks = [step_hooks.register_optimizer_step_pre_hook(pre),
             step_hooks.register_optimizer_step_post_hook(lambda *a: sys.setprofile(None))]
    try:
        try:
            res = train(cfg_of(), run_dir=tmp_path, progress=False)
            assert res.stopped == "SIGINT" and res.step == 3
        except KeyboardInterrupt:  # the old behaviour: saved whatever the update had reached
            pass
    finally:
        sys.setprofile(None)
        for h in hooks:
            h.remove()
    assert fired == [3]
    assert load_checkpoint(tmp_path).step == 3
    assert_same_state(straight, load_checkpoint(train(cfg_of(), run_dir=tmp_path, progress=False).checkpoint))


def test_temp_files_of_dead_writers_are_removed_at_start(tmp_path):
    ck = tmp_path / "checkpoints"
    pid = os.fork()
    if pid == 0:  # a writer SIGKILLed between writing its temp file and renaming it
        os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
        save_checkpoint(ck / "step-0000001.safetensors", load_ckpt_stub())
        os._exit(0)
    assert os.waitpid(pid, 0)[1] & 0x7F == signal.SIGKILL
    orphan, = ck.glob(".step-*")
    assert orphan.name.endswith(f"-{pid}") and orphan.stat().st_size > 0
    host = orphan.name[len(".step-0000001.safetensors.tmp-"):-len(f"-{pid}")]
    live = ck / orphan.name.replace(f"-{pid}", f"-{os.getppid()}")    # a writer still running
    other = ck / orphan.name.replace(host, host + "-elsewhere")        # another host's writer
    old = ck / f".step-0000002.safetensors.tmp-{pid}"                  # the older naming
    for p in (live, other, old):
        p.write_bytes(b"x")
    train(cfg_of(), run_dir=tmp_path, progress=False, max_steps=1)
    assert sorted(p.name for p in ck.glob(".step-*")) == sorted([live.name, other.name])


def load_ckpt_stub():
    from rinkit.train.checkpoint import Checkpoint
    return Checkpoint({}, 1, {"w": torch.zeros(1000)})


def test_stats_and_tensorboard_have_no_duplicates_after_resume(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rinkit.diffusion.process import Diffusion
    over = ("train.steps=7", "train.ckpt_every=2", "train.tensorboard=true")
    real, n = Diffusion.loss, [0]

    def crash(self, *a, **k):  # a crash inside step 5 -> 6, after step 5 was logged (last save: 4)
        n[0] += 1
        if n[0] == 6:
            raise RuntimeError("crash")
        return real(self, *a, **k)
    monkeypatch.setattr(Diffusion, "loss", crash)
    with pytest.raises(RuntimeError):
        train(cfg_of(*over), run_dir=tmp_path, progress=False)
    steps = lambda: [json.loads(ln)["step"] for ln in (tmp_path / "stats.jsonl").read_text().splitlines()]  # noqa: E731
    assert steps() == [1, 2, 3, 4, 5]
    monkeypatch.setattr(Diffusion, "loss", real)
    train(cfg_of(*over), run_dir=tmp_path, progress=False)
    assert steps() == [1, 2, 3, 4, 5, 6, 7]
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6, 7]


def test_a_data_error_saves_the_steps_done_and_resume_is_bit_identical(tmp_path, straight, monkeypatch):
    from rinkit_plugins.image.data import TensorImages
    real, n = TensorImages.__getitem__, [0]

    def flaky(self, i):  # the 4th batch (step 3 -> 4) hits an unreadable example
        n[0] += 1
        if n[0] == 3 * 16 + 5:
            raise RinkitError("cannot read image bad.png: broken data stream")
        return real(self, i)
    monkeypatch.setattr(TensorImages, "__getitem__", flaky)
    with pytest.raises(RinkitError, match=r"bad.png: broken data stream \(steps 1-3 are saved in .*step-0000003"):
        train(cfg_of(), run_dir=tmp_path, progress=False)
    assert [load_checkpoint(p).step for p in list_checkpoints(tmp_path)] == [3]
    monkeypatch.setattr(TensorImages, "__getitem__", real)
    assert_same_state(straight, load_checkpoint(train(cfg_of(), run_dir=tmp_path, progress=False).checkpoint))


# -- bad input: one line, exit 2, nothing written ----------------------------------------------------

def _png_bytes(size=(8, 8), value=128):
    b = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(b, "PNG")
    return b.getvalue()


def _truncated_png(size=8):
    """A noise PNG cut inside its image data (a flat one would still decode)."""
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(size).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(b, "PNG")
    return b.getvalue()[: len(b.getvalue()) // 2]


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """One folder of bad inputs, written once."""
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    (d / "picture.png").write_bytes(_png_bytes())
    good = rng.uniform(-1, 1, (40, 8, 8)).astype(np.float32)
    np.savez(d / "good.npz", x=good, y=np.arange(40) % 10)
    raw = (d / "good.npz").read_bytes()
    (d / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    nan = good.copy()
    nan[7, 2, 3] = np.nan
    np.savez(d / "nan.npz", x=nan)
    np.savez(d / "strings.npz", x=np.full((40, 8, 8), "a"))
    np.savez(d / "objects.npz", arr_0=np.array([1, "a", None], dtype=object))
    np.save(d / "objects.npy", np.array([1, "a", None], dtype=object))
    (d / "afile").write_text("not a folder")
    with tarfile.open(d / "whole.tar", "w") as tf:  # webdataset: key.png + key.cls
        for i in range(6):
            for name, data in ((f"k{i}.png", _png_bytes(value=40 * i)), (f"k{i}.cls", str(i % 3).encode())):
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    with tarfile.open(d / "whole.tar") as tf:  # cut where the last example's .cls begins
        cut = tf.getmember("k5.cls").offset
    (d / "shards").mkdir()
    (d / "shards" / "shard-0.tar").write_bytes((d / "whole.tar").read_bytes()[:cut])
    (d / "truncated-png").mkdir()
    (d / "truncated-png" / "a.png").write_bytes(_truncated_png(64))
    for name, pts in (("nan", rng.normal(size=(600, 3))), ("few", rng.normal(size=(100, 3)))):
        (d / f"points-{name}").mkdir()
        if name == "nan":
            pts[17, 1] = np.nan
        np.save(d / f"points-{name}" / f"{name}.npy", pts.astype(np.float32))
    (d / "audio").mkdir()
    sf.write(str(d / "audio" / "low.wav"), np.zeros(8000, np.float32), 8000)  # 8 kHz for a 16 kHz model
    return d


def _bad_train_cases(d):
    # (one step each, so that a case which is wrongly accepted fails fast)
    one = ("train.steps=1", "train.eval_samples=0", "train.tensorboard=false")
    t = ["train", "--quiet", "--run-dir", str(d / "new-run"), "--set", *TINY, *one]
    pts = ["train", "--quiet", "--preset", "points-shapes", "--run-dir", str(d / "new-run"), "--set", *one,
           "data.dataset=folder", "modality_options.num_points=512"]
    return [
        ([*t, "modality_options.image_size=0"], ["modality_options.image_size", "greater than 0"]),
        (["train", "--config", str(d / "picture.png")], ["picture.png", "not a YAML config"]),
        ([*t, "train.lr=.inf"], ["train.lr", "finite"]),
        ([*t, "--data", str(d / "audio")],
         ["does not read data.path", "data.dataset=folder"]),
        ([*t, "train.steps=1", "--run-dir", str(d / "afile")], ["afile", "not a folder"]),
        ([*t, "data.dataset=npz", f"data.path={d / 'strings.npz'}"], ["strings.npz", "must be numbers"]),
        ([*t, "data.dataset=npz", f"data.path={d / 'truncated.npz'}"], ["truncated.npz"]),
        ([*t, "data.dataset=npz", f"data.path={d / 'objects.npz'}"], ["objects.npz", "object arrays"]),
        ([*t, "data.dataset=npz", f"data.path={d / 'nan.npz'}"], ["nan.npz", "image 7", "NaN"]),
        ([*t, "data.dataset=tar", f"data.path={d / 'shards'}"], ["shard-0.tar", "truncated", "skip_corrupt"]),
        ([*pts, f"data.path={d / 'points-nan'}"], ["nan.npy", "NaN"]),
        ([*pts, f"data.path={d / 'points-few'}"], ["few.npy", "100 points", "num_points=512"]),
        (["train", "--quiet", "--preset", "audio-synth", "--run-dir", str(d / "new-run"), "--set", *one,
          "data.dataset=folder", f"data.path={d / 'audio'}"], ["low.wav", "8000 Hz"]),
    ]


def test_bad_training_inputs_are_one_line_and_write_nothing(bad, capsys):
    before, failed = snapshot(bad), []
    for argv, needles in _bad_train_cases(bad):
        rc = main(argv)
        try:
            one_line_error(rc, capsys.readouterr().err, *needles)
            assert snapshot(bad) == before, "wrote to disk"  # no run folder, no config.yaml, nothing changed
        except AssertionError as e:
            failed.append(f"{needles[0]}: {str(e).splitlines()[0]}")
            shutil.rmtree(bad / "new-run", ignore_errors=True)  # a wrongly accepted case trained: start clean
            before = snapshot(bad)
    assert not failed, failed


@pytest.mark.parametrize("argv,needle", [
    (["--num-samples", "-5"], "--num-samples"), (["--per-class", "-1"], "--per-class"),
    (["--batch-size", "0"], "--batch-size"), (["--device", "gpu"], "--device"),
    (["--steps", "0"], "--steps"), (["--eta", "nan"], "--eta"),
])
def test_bad_sample_arguments_fail_at_parse_time(argv, needle, tmp_path, capsys):
    rc = main(["sample", "--ckpt", str(tmp_path / "missing"), *argv])
    one_line_error(rc, capsys.readouterr().err, needle)


def test_bad_eval_inputs_are_one_line(bad, tmp_path, monkeypatch, capsys):
    from rinkit.evaluate import inception
    monkeypatch.setattr(inception, "load_inception", lambda *a, **k: inception.random_inception())
    for src, needles in (("objects.npy", ["objects.npy", "object arrays"]), ("objects.npz", ["objects.npz"]),
                         ("truncated.npz", ["truncated.npz"]), ("truncated-png", ["a.png", "cannot read image"])):
        rc = main(["eval", str(bad / src), "--ref", str(bad / src), "--quiet"])
        one_line_error(rc, capsys.readouterr().err, *needles)
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "samples.npy", images)  # an .npy of uint8 images is read, not refused
    from rinkit.evaluate.evaluator import load_images
    assert np.array_equal(load_images(tmp_path / "samples.npy")[0], images)


def test_a_dataloader_workers_error_is_its_one_line_message(bad, tmp_path):
    """A truncated PNG read in a worker process (data.num_workers=2), through the real CLI."""
    out = subprocess.run([sys.executable, "-m", "rinkit", "train", "--quiet", "--run-dir", str(tmp_path / "run"),
                          "--set", *TINY, "train.steps=2", "data.dataset=folder", f"data.path={bad / 'truncated-png'}",
                          "data.num_workers=2", "model.num_classes=0", "train.tensorboard=false"],
                         capture_output=True, text=True, timeout=300)
    one_line_error(out.returncode, out.stderr, "a.png", "cannot read image")
    assert "worker" not in out.stderr and "Original" not in out.stderr


def test_genuine_bugs_are_one_line_unless_debugging(monkeypatch, capsys):
    import rinkit.cli as cli

    def boom(args):
        raise TypeError("boom")
    monkeypatch.setattr(cli, "cmd_plugins", boom)
    assert main(["plugins"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("rinkit: internal error: TypeError: boom") and "--debug" in err and "\n" not in err
    with pytest.raises(TypeError):
        main(["plugins", "--debug"])
    monkeypatch.setenv("RINKIT_DEBUG", "1")
    with pytest.raises(TypeError):
        main(["plugins"])


def test_describe_maps_expected_failures():
    assert describe(PermissionError(13, "Permission denied", "/r/x")) == "/r/x: Permission denied"
    worker = ("Caught RinkitError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
              '  File "x.py", line 1, in f\nrinkit.errors.RinkitError: cannot read image a.png: truncated')
    assert describe(RinkitError(worker)) == "cannot read image a.png: truncated"
    assert describe(ValueError(worker.replace("RinkitError", "ValueError"))).endswith("ValueError: cannot read image a.png: truncated")
    assert describe(ValueError("a bug")) is None


# -- video / points / audio files (issue 14's bad input) ---------------------------------------------

def test_video_clips_shorter_than_a_clip_unequal_frames_and_corrupt_files(tmp_path):
    from rinkit_plugins.video import VideoOptions
    o = VideoOptions(frames=4, context_frames=2, frame_size=8, channels=3, patch_size=4)
    for name, sizes in (("ok", [8] * 5), ("short", [8] * 3), ("mixed", [8, 8, 12, 8, 8])):
        (tmp_path / name).mkdir()
        for i, s in enumerate(sizes):
            Image.fromarray(np.full((s, s, 3), 50 * i, np.uint8)).save(tmp_path / name / f"{i:03d}.png")
    build = lambda **kw: get_dataset("video", "frame_folders").build(  # noqa: E731
        o, DataConfig(dataset="frame_folders", path=str(tmp_path), **kw), "test")
    ds = build()
    names = [p.name for p in ds.items]
    with pytest.raises(RinkitError, match=r"short: 3 frame\(s\), shorter than a clip of 4 \(context_frames 2"):
        ds[names.index("short")]
    with pytest.raises(RinkitError, match=r"mixed: frames differ in size \(000.png is 8x8, 002.png is 12x12"):
        ds[names.index("mixed")]
    assert ds[names.index("ok")][0].shape == (4, 3, 8, 8)
    (tmp_path / "ok" / "004.png").write_bytes(_truncated_png())  # the middle clip reads frames 0..3
    (tmp_path / "ok" / "001.png").write_bytes(_truncated_png())
    with pytest.raises(RinkitError, match="cannot read frame .*001.png"):
        build()[names.index("ok")]
    kept = build(skip_corrupt=True)
    assert [p.name for p in kept.items] == ["mixed", "ok"]  # too short: left out and counted
    pytest.importorskip("decord")
    (tmp_path / "vids").mkdir()
    (tmp_path / "vids" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    vids = get_dataset("video", "video_folder").build(o, DataConfig(dataset="video_folder", path=str(tmp_path / "vids")), "test")
    with pytest.raises(RinkitError, match="cannot decode .*broken.mp4"):
        vids[0]


def test_points_and_audio_files_that_cannot_fill_the_model_are_named(bad):
    from rinkit_plugins.audio import AudioOptions
    from rinkit_plugins.audio.data import folder as audio_folder
    from rinkit_plugins.points import PointOptions
    from rinkit_plugins.points.data import folder as point_folder
    o = PointOptions(num_points=512, num_groups=16, group_size=8)
    with pytest.raises(RinkitError, match="few.npy: 100 points, fewer than modality_options.num_points=512"):
        point_folder(o, DataConfig(dataset="folder", path=str(bad / "points-few")), "train")
    assert len(point_folder(PointOptions(num_points=64, num_groups=16, group_size=8),
                            DataConfig(dataset="folder", path=str(bad / "points-few")), "train")) == 1
    with pytest.raises(RinkitError, match="nan.npy: point set holds NaN"):
        point_folder(o, DataConfig(dataset="folder", path=str(bad / "points-nan")), "train")
    with pytest.raises(RinkitError, match="low.wav: sampled at 8000 Hz.*reaches 8000 Hz"):
        audio_folder(AudioOptions(), DataConfig(dataset="folder", path=str(bad / "audio")), "train")
    assert len(audio_folder(AudioOptions(sample_rate=8000, n_mels=32, hop_length=125, patch_size=(8, 4)),
                            DataConfig(dataset="folder", path=str(bad / "audio")), "train")) == 1


def test_truncated_tar_shard_is_an_error_or_a_counted_skip(bad, capsys):
    from rinkit_plugins.image import ImageOptions
    o = ImageOptions(image_size=8, channels=3, patch_size=2)
    build = lambda **kw: get_dataset("image", "tar").build(  # noqa: E731
        o, DataConfig(dataset="tar", path=str(bad / "shards"), **kw), "train")
    with pytest.raises(RinkitError, match="shard-0.tar is truncated"):
        build()
    ds = build(skip_corrupt=True)  # k5.png lost its label: left out, not trained as class 0
    assert [y for _, y in ds.items] == [0, 1, 2, 0, 1]
    assert "1 truncated shard(s)" in capsys.readouterr().out


# -- full and read-only disks (a tmpfs of our own; needs root and mount) -------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (no mount permission in this container)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_and_read_only_keep_the_last_checkpoint_and_name_the_path(tmpfs, capsys):
    run = tmpfs / "run"
    argv = ["train", "--quiet", "--run-dir", str(run), "--set", *TINY, "train.ckpt_every=2",
            "train.tensorboard=false", "train.steps=2"]
    assert main(argv) == 0
    capsys.readouterr()
    good = run / "checkpoints" / "step-0000002.safetensors"
    size = good.stat().st_size
    filler = tmpfs / "filler"
    with open(filler, "wb") as f:  # fill the disk, then leave room for logs but not a checkpoint
        try:
            while True:
                f.write(bytes(1 << 16))
                f.flush()
        except OSError:
            pass
    os.truncate(filler, max(filler.stat().st_size - size // 2, 0))
    before = snapshot(run)
    rc = main([*argv[:-1], "train.steps=4"])
    one_line_error(rc, capsys.readouterr().err, "step-0000004.safetensors", "No space left on device",
                   f"the last good checkpoint {good} is kept")
    assert list_checkpoints(run) == [good] and not list((run / "checkpoints").glob(".*tmp*"))
    assert snapshot(run)[str(good)] == before[str(good)]
    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    before = snapshot(run)
    one_line_error(main([*argv[:-1], "train.steps=4"]), capsys.readouterr().err, "config.yaml",
                   "Read-only file system")
    one_line_error(main(["sample", "--ckpt", str(run), "--steps", "2", "--per-class", "1"]),
                   capsys.readouterr().err, str(run / "samples-0"), "Read-only file system")
    assert snapshot(run) == before
    assert load_checkpoint(run).step == 2  # the run resumes from here once there is room again
