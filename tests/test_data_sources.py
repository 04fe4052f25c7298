"""Every on-disk image format loads a small dataset the test writes; bad files are named."""
import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from rinkit.config import DataConfig
from rinkit.errors import RinkitError
from rinkit.registry import get_dataset
from rinkit_plugins.image import ImageOptions
from rinkit_plugins.image.data import adm_center_crop, pad_or_crop

OPTS = ImageOptions(image_size=16, channels=3, patch_size=2)


def build(name, path, split="train", opts=OPTS, **data):
    return get_dataset("image", name).build(opts, DataConfig(dataset=name, path=str(path) if path else None, **data), split)


def png(color, size=(24, 20)) -> Image.Image:
    return Image.new("RGB", size, color)


def check(ds, n, labels=None):
    assert len(ds) == n
    xs = [ds[i] for i in range(len(ds))]
    for x, _ in xs:
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and -1 <= x.min() <= x.max() <= 1
    if labels is not None:
        assert [y for _, y in xs] == labels
    return xs


def test_class_folders_label_by_sorted_name_and_flat_folders_are_unconditional(tmp_path):
    for cls, color in (("cat", (255, 0, 0)), ("ant", (0, 0, 255))):
        (tmp_path / "cls" / cls).mkdir(parents=True)
        for i in range(2):
            png(color).save(tmp_path / "cls" / cls / f"{i}.png")
    ds = build("folder", tmp_path / "cls")
    xs = check(ds, 4, [0, 0, 1, 1])
    assert build("imagenet", tmp_path / "cls").classes == ["ant", "cat"]
    assert ds.classes == ["ant", "cat"] and xs[0][0][2].mean() == 1.0 and xs[2][0][0].mean() == 1.0
    (tmp_path / "flat").mkdir()
    png((0, 255, 0)).save(tmp_path / "flat" / "a.jpg")
    png((0, 255, 0)).save(tmp_path / "flat" / "b.png")
    (tmp_path / "flat" / "notes.txt").write_text("ignored")
    check(build("folder", tmp_path / "flat"), 2, [0, 0])


def test_corrupt_image_is_named_or_skipped_and_counted(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    png((9, 9, 9)).save(tmp_path / "a" / "good.png")
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = build("folder", tmp_path)
    bad = [i for i in range(len(ds)) if ds.items[i][0].name == "broken.png"][0]
    with pytest.raises(RinkitError, match=r"cannot read image .*broken\.png"):
        ds[bad]
    ds = build("folder", tmp_path, skip_corrupt=True)
    assert len(ds) == 1 and ds.skipped == 1 and "skipped 1 unreadable" in capsys.readouterr().out


def test_adm_centre_crop_and_pad():
    img = Image.new("RGB", (300, 100), (0, 0, 0))
    img.paste((255, 255, 255), (140, 0, 160, 100))  # a white bar in the middle
    arr = adm_center_crop(img, (16, 16))
    assert arr.shape == (16, 16, 3) and arr[:, 8].min() > 200 and arr[:, 0].max() < 30
    x = pad_or_crop(torch.zeros(1, 28, 28), (32, 32))
    assert x.shape == (1, 32, 32) and x[0, 0, 0] == -1 and x[0, 2:30, 2:30].eq(0).all()


def test_cifar10_python_batches_with_a_restricted_unpickler(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, 3)],
             b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * 3}
        (root / name).write_bytes(pickle.dumps(d, protocol=2))
    ds = build("cifar10", tmp_path)
    labels = [y for n in range(1, 6) for y in pickle.loads((root / f"data_batch_{n}").read_bytes())[b"labels"]]
    xs = check(ds, 15, labels)
    raw = pickle.loads((root / "data_batch_1").read_bytes())[b"data"][0].reshape(3, 32, 32)
    full = build("cifar10", tmp_path, opts=ImageOptions(image_size=32))[0][0]
    assert torch.equal(full, torch.from_numpy(raw).float() / 127.5 - 1)  # CHW order kept
    assert len(build("cifar10", tmp_path, "test")) == 3 and xs

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    (root / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(RinkitError, match=r"data_batch_3.*refusing to load .*print"):
        build("cifar10", tmp_path)


def idx(path, arr):
    dims = b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, arr.ndim]) + dims + arr.astype(np.uint8).tobytes())


def test_mnist_idx_files_and_the_fashion_mnist_default(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (5, 28, 28)), np.array([3, 1, 4, 1, 5])
    for pre in ("train", "t10k"):
        idx(tmp_path / f"{pre}-images-idx3-ubyte.gz", x)
        idx(tmp_path / f"{pre}-labels-idx1-ubyte.gz", y)
    grey32 = ImageOptions(image_size=32, channels=1, patch_size=2)
    for name in ("mnist", "fashion-mnist"):
        ds = build(name, tmp_path, opts=grey32, fit="pad")
        img, lab = ds[2]
        assert len(ds) == 5 and lab == 4 and img.shape == (1, 32, 32)
        assert torch.equal(img[0, 2:30, 2:30], torch.from_numpy(x[2]).float() / 127.5 - 1)
    check(build("mnist", tmp_path, "test"), 5, y.tolist())  # resized, grey -> RGB
    idx(tmp_path / "train-labels-idx1-ubyte.gz", y[:4])
    with pytest.raises(RinkitError, match="5 images but 4 labels"):
        build("mnist", tmp_path)
    with pytest.raises(RinkitError, match=r"nope.*does not exist.*/usr/share/datasets/fashion-mnist"):
        build("fashion-mnist", tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03")
    with pytest.raises(RinkitError, match="bad magic"):
        build("mnist", tmp_path / "bad")


def test_npz_arrays(tmp_path):
    x = np.random.default_rng(2).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=x, labels=np.array([0, 2, 1, 2]))
    xs = check(build("npz", tmp_path / "d.npz"), 4, [0, 2, 1, 2])
    assert torch.equal(xs[1][0], torch.from_numpy(x[1]).permute(2, 0, 1).float() / 127.5 - 1)
    np.savez(tmp_path / "f.npz", arr_0=np.zeros((2, 16, 16, 3), np.float32))  # floats in [0, 1], no labels
    check(build("npz", tmp_path / "f.npz"), 2, [0, 0])
    np.savez(tmp_path / "bad.npz", other=np.zeros(3))
    with pytest.raises(RinkitError, match="no image array"):
        build("npz", tmp_path / "bad.npz")


def test_webdataset_tar_shards(tmp_path):
    def add(tf, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    for s in range(2):
        with tarfile.open(tmp_path / f"shard-{s:06d}.tar", "w") as tf:
            for k in range(3):
                buf = io.BytesIO()
                png((40 * k, 0, 0)).save(buf, "PNG")
                add(tf, f"s{s}_{k:03d}.png", buf.getvalue())
                add(tf, f"s{s}_{k:03d}.cls", str(k + s).encode())
    ds = build("tar", str(tmp_path / "shard-{000000..000001}.tar"))
    check(ds, 6, [0, 1, 2, 1, 2, 3])
    assert len(build("imagenet", str(tmp_path / "shard-*.tar"))) == 6
    assert ds.num_classes == 4 and len(build("tar", tmp_path)) == 6
    with tarfile.open(tmp_path / "bad.tar", "w") as tf:
        add(tf, "a.png", b"not a png")
        add(tf, "a.cls", b"seven")
    with pytest.raises(RinkitError, match=r"bad\.tar:a\.cls: label 'seven'"):
        build("tar", tmp_path / "bad.tar")


def test_folder_dataset_trains_with_workers(tmp_path, tiny_cfg):
    from rinkit.train.trainer import train
    for cls in ("a", "b"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(8):
            png((100 * i % 255, 0, 0), (12, 12)).save(tmp_path / "img" / cls / f"{i}.png")
    cfg = tiny_cfg("data.dataset=folder", f"data.path={tmp_path / 'img'}", "data.num_workers=1", "data.hflip=true",
                   "model.num_classes=2", "train.steps=2", "train.batch_size=4", "train.tensorboard=false",
                   "modality_options.image_size=8", "modality_options.channels=3")
    res = train(cfg, run_dir=tmp_path / "run", progress=False)
    assert res.step == 2 and np.isfinite(res.losses).all()
    with pytest.raises(RinkitError, match="has 2 classes"):
        train(cfg.model_copy(update={"model": cfg.model.model_copy(update={"num_classes": 1})}),
              run_dir=tmp_path / "run2", progress=False)
