"""The hook specifications of rinkit's plugin system (pytest's hookspec.py is the model), and the
types the hooks return. Plugin authors import these through `rinkit.plugin`.

Every hook takes no arguments and returns a list, so one plugin may serve several modalities and
any plugin may add datasets, metrics or presets to another plugin's modality. The hooks run once
per process (rinkit.registry caches what they return); a hook that raises or returns the wrong
types fails its plugin alone, with a one-line message naming it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
from pydantic import BaseModel

PROJECT = "rinkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Mark a plugin's hook functions: ``@hookimpl def rinkit_modalities(): ...``."""


@dataclass
class Modality:
    """What a modality supplies. `options` is a pydantic model of its settings (patch size, image
    size...); configs carry them as `modality_options` and the plugin validates them.

    make_tokenizer(options, interface_dim) -> nn.Module: forward(x, context) -> (tokens, state):
        tokens (B, N, D) with D = interface_dim; state None, or per-example data the detokenizer
        needs from the input (e.g. which points formed which group of a point cloud). Always the
        pair, as nn.MultiheadAttention always returns (output, weights or None): one type, so
        nothing downstream asks which form it got; a bare tensor is a one-line error.
    make_detokenizer(options, interface_dim) -> nn.Module: forward(tokens, context, state) -> a
        tensor of exactly the input's shape (B, *sample_shape): no broadcasting. `state` is what
        the tokenizer returned for this input (None for most modalities). A detokenizer whose
        output is built from the data and so is one kind of estimate (the video plugin's copy of
        the given frames: an x0 estimate) sets `output_target` ("x0", "eps" or "v"); building a
        model whose `diffusion.pred` differs is then a one-line error.
    sample_shape(options) -> per-example shape of the data (what the sampler draws noise for)
    write_samples(samples, labels, path, options, context=None) -> list of the files written;
        samples (B, *sample_shape) in [-1, 1], labels (B,) or None, `path` a stem without
        suffix (write `path.with_suffix(".png")`, or files in a folder `path/`)
    condition(x, options) -> (target, context, loss_mask), for modalities that condition on part
        of a clean example (e.g. given video frames): `target` is what the model generates (its
        shape is sample_shape), `context` is passed clean to the tokenizer/detokenizer, and
        `loss_mask` (or None) restricts the loss. None means the whole example is generated.
    context_shape(options) -> per-example shape of `context` (required with `condition`).
    default_preset: the preset `rinkit train --modality NAME` uses (rinkit's or one the plugin
        ships through `rinkit_presets`).
    invertible: the detokenizer can undo the tokenizer (a patch embedding and its un-patchify);
        the contract check then fits the pair briefly and requires detokenize(tokenize(x)) ~ x,
        which catches a detokenizer that puts values back in the wrong places.
    token_view(values, x, options, state=None, context=None) -> uint8 (B, H, W, 3): optional; draws
        a per-interface-token value (B, N) in [0, 1] onto the data x (B, *sample_shape) in [-1, 1]
        (`state`: the tokenizer's state for x; `context`: the clean conditioning), e.g. a heatmap
        over an image's patches. `rinkit routing` uses it; without it a token-index plot is drawn.
    finish(samples, options, generators) -> samples of the same shape: optional; turns what the
        sampler drew into data, for a modality whose training split is served in another form
        (the points plugin's `canonical_pose`: shapes learned in their own frame get a uniform
        random pose). `generators` holds one torch.Generator per sample (CPU), already used for
        that sample's noise, so the result is as seeded as the samples. Every sampling path
        (`rinkit sample`, the trainer's samples and metrics, the Python API) goes through it.
    """
    name: str
    description: str
    options: type[BaseModel]
    make_tokenizer: Callable[[Any, int], Any]
    make_detokenizer: Callable[[Any, int], Any]
    sample_shape: Callable[[Any], tuple[int, ...]]
    write_samples: Callable[..., list[Path]]
    default_preset: str | None = None
    condition: Callable[[Any, Any], tuple[Any, Any, Any]] | None = None
    context_shape: Callable[[Any], tuple[int, ...]] | None = None
    invertible: bool = False
    token_view: Callable[..., Any] | None = None
    finish: Callable[..., Any] | None = None


@dataclass
class DatasetSpec:
    """build(options, data_config, split) -> a map-style dataset of (x, label) with x a float
    tensor in [-1, 1] shaped like sample_shape(options) and label an int (0 if unlabelled).
    split is "train" or "test". `reads_path=False` marks a dataset that is generated or built in:
    a data.path given with it is an error instead of being silently ignored."""
    modality: str
    name: str
    description: str
    build: Callable[..., Any]
    num_classes: int = 0
    reads_path: bool = True


@dataclass
class MetricSpec:
    """build(options, data_config) -> callable(samples, labels) -> dict[str, float]. For modalities
    with `condition`, a callable that takes a `context` keyword also receives the given data.
    `tags`: the dataset names the metric applies to (empty = every dataset of the modality).
    Keys must be unique across the metrics of a modality."""
    modality: str
    name: str
    description: str
    build: Callable[..., Any]
    tags: tuple[str, ...] = field(default_factory=tuple)


class HookSpecs:
    """The four hooks. A plugin module defines any of them as plain functions marked `@hookimpl`;
    a misspelled or unmarked `rinkit_*` function is refused with a "did you mean" message."""

    @hookspec
    def rinkit_modalities(self) -> list[Modality]:
        """The modalities this plugin provides.

        :return: `Modality` objects; each name must be new (a built-in plugin's name wins a clash,
            two third-party plugins claiming one name both fail). Called once per process.

        Example::

            @hookimpl
            def rinkit_modalities():
                return [Modality("timeseries", "multichannel time series (B, C, L)", options=Options,
                                 make_tokenizer=Tokenizer, make_detokenizer=Detokenizer,
                                 sample_shape=lambda o: (o.channels, o.length), write_samples=write)]
        """

    @hookspec
    def rinkit_datasets(self) -> list[DatasetSpec]:
        """Named datasets, for this plugin's modalities or any other's (`DatasetSpec.modality`).

        :return: `DatasetSpec` objects; `build(options, data_config, split)` is called when a run
            (or `rinkit check`) needs the data, never at registration.
        """

    @hookspec
    def rinkit_metrics(self) -> list[MetricSpec]:
        """Quality metrics, for this plugin's modalities or any other's (`MetricSpec.modality`).

        :return: `MetricSpec` objects; `build(options, data_config)` returns a callable
            `(samples, labels) -> dict[str, float]` run at the end of training (train.eval_samples),
            as the in-training proxy (train.metric_every) and by `rinkit check`. Keys must be unique
            across the metrics of a modality.
        """

    @hookspec
    def rinkit_presets(self) -> list[Path]:
        """YAML presets shipped inside the plugin's package.

        :return: paths of existing `.yaml` files; the file's stem is the preset's name (which must
            be new). `package_presets(__name__)` lists a package's `configs/*.yaml`; ship them as
            package data so a wheel carries them.
        """
