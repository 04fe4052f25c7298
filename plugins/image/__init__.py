"""The built-in image modality: patch tokenizer / detokenizer, datasets, PNG grids, digits-FID.

Registered through the `rinkit` entry-point group (pyproject.toml), like any third-party plugin."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rinkit.registry import DatasetSpec, MetricSpec, Modality, hookimpl


class ImageOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_size: int | tuple[int, int] = 32
    channels: int = Field(3, ge=1)
    patch_size: int = Field(2, ge=1)
    pos_emb: Literal["learned", "sincos", "sincos+learned"] = "learned"

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
    return ImageTokenizer(opts.channels, opts.size, opts.patch_size, dim, opts.pos_emb)


def _detokenizer(opts: ImageOptions, dim: int):
    from rinkit_plugins.image.tokenizer import ImageDetokenizer
    return ImageDetokenizer(opts.channels, opts.size, opts.patch_size, dim)


def _write(samples, labels, path, options=None, context=None, **kw):
    from rinkit_plugins.image.writer import write_grid
    return write_grid(samples, labels, path, options, **kw)


def _digits(options, data_cfg, split="train"):
    from rinkit_plugins.image.data import digits
    return digits(options, data_cfg, split)


def _digits_metric(options, data_cfg):
    from rinkit_plugins.image.digits_metric import DigitsMetric
    return DigitsMetric()


@hookimpl
def rinkit_modalities():
    return [Modality(
        name="image", description="images (B, C, H, W): ViT patches, PNG grids",
        options=ImageOptions, make_tokenizer=_tokenizer, make_detokenizer=_detokenizer,
        sample_shape=lambda o: (o.channels, *o.size), write_samples=_write, default_preset="digits")]


@hookimpl
def rinkit_datasets():
    return [DatasetSpec("image", "digits", "scikit-learn's 1,797 8x8 handwritten digits, 10 classes",
                        _digits, num_classes=10)]


@hookimpl
def rinkit_metrics():
    return [MetricSpec("image", "digits_fid", "Fréchet distance of a digits classifier's features "
                       "vs the held-out digits (+ class accuracy)", _digits_metric, tags=("digits",))]
