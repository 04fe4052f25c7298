"""The modality contract, checked on one tiny batch before anything trains.

A plugin's mistakes otherwise train silently into garbage (a detokenizer whose output broadcasts
against the target), surface after the last step (a writer that returns None) or deep inside the
engine (tokens in the wrong layout). `check` runs every part of the contract once and raises a
one-line `ContractError` naming the plugin, the hook and what was expected vs what it got:

    options        the config's modality_options validate against the plugin's model
    sample_shape   a tuple of positive ints (and context_shape for conditional modalities)
    dataset        items (x, label): x a float tensor of sample_shape (the target after
                   `condition`), finite, in [-1, 1]; label an int in [0, num_classes)
    tokenizer      (tokens, state): tokens (B, N, interface_dim), state None unless the
                   detokenizer needs it
    detokenizer    forward(tokens, context, state) -> exactly the input's shape: no broadcasting
    round trip     modalities declared `invertible`: a fresh tokenizer / detokenizer pair,
                   briefly fitted on noise, reconstructs other noise: detokenize(tokenize(x)) ~ x
    finish         modalities that have it: samples of the same shape back, finite
    write_samples  a list of the paths it wrote, all existing
    metrics        dict[str, float], and no key returned by two metrics

`check_shapes` is the part that needs no data, run on the meta device (free for any model size):
`rinkit info` and `rinkit train --dry-run` use it. `check` is everything: `rinkit check`, the
trainer before its first step, and `rinkit.testing.check_modality` for a plugin's own tests.
"""
from __future__ import annotations

import contextlib
import random
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rinkit.build import ConfigLike, plugin_line, resolve
from rinkit.engine.rin import check_detokenizer, tokens_and_state
from rinkit.errors import RinkitError
from rinkit.registry import Modality, owner

BATCH = 4  # examples for the shape, writer and metric checks
# Round trip: a fresh tokenizer/detokenizer pair is fitted as an autoencoder on uniform noise of
# the sample shape (new noise every step, FIT_BATCH examples) and measured on other noise. Noise
# has no correlations a wrong pair could exploit: one that puts values back in the wrong places
# stays at relative error ~1, while every built-in pair is below 0.05 within 40-60 steps.
FIT_BATCH = 8
FIT_STEPS = 200
FIT_LR = 1e-2
MAX_REL_ERROR = 0.05


class ContractError(RinkitError):
    """A plugin broke the modality contract; the message is one line naming it."""


@dataclass
class Check:
    name: str
    detail: str
    seconds: float = 0.0


def _shape(t) -> str:
    return str(tuple(t.shape)) if hasattr(t, "shape") else type(t).__name__


class _Checker:
    def __init__(self, cfg: ConfigLike, device: torch.device | str = "cpu"):
        self.cfg, self.device = resolve(cfg), torch.device(device)
        self.modality: Modality = self.cfg.impl
        self.owner = owner("modality", self.cfg.modality)
        self.opts = self.cfg.options
        self.results: list[Check] = []

    # one line: who, which hook, expected vs got
    def fail(self, part: str, message: str, who=None, hook: str | None = None) -> ContractError:
        hook = hook or f"rinkit_modalities {self.cfg.modality!r}"
        return ContractError(f"{who or self.owner}, {hook} {part}: {message}")

    @contextlib.contextmanager
    def calling(self, part: str, who=None, hook: str | None = None):
        """Exceptions from plugin code become one line naming the plugin; a plugin's own
        RinkitError (a user mistake it already explains, e.g. a missing data.path) passes."""
        try:
            yield
        except RinkitError:
            raise
        except Exception as e:  # noqa: BLE001
            text = str(e).strip().splitlines()
            raise self.fail(part, f"raised {type(e).__name__}: {text[0] if text else ''}".rstrip(": "),
                            who, hook) from e

    def ok(self, name: str, detail: str, t0: float) -> None:
        self.results.append(Check(name, detail, time.perf_counter() - t0))

    # -- the parts ----------------------------------------------------------------------------

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        t0 = time.perf_counter()
        with self.calling("sample_shape"):
            shape = self.modality.sample_shape(self.opts)
        if not (isinstance(shape, (tuple, list)) and shape and all(isinstance(v, int) and v > 0 for v in shape)):
            raise self.fail("sample_shape", f"expected a tuple of positive ints, got {shape!r}")
        ctx = None
        if self.modality.context_shape is not None:
            with self.calling("context_shape"):
                ctx = self.modality.context_shape(self.opts)
            if not (isinstance(ctx, (tuple, list)) and all(isinstance(v, int) and v >= 0 for v in ctx)):
                raise self.fail("context_shape", f"expected a tuple of ints, got {ctx!r}")
            ctx = tuple(ctx)
        self.ok("sample_shape", f"{tuple(shape)}" + (f", context {ctx}" if ctx is not None else ""), t0)
        return tuple(shape), ctx

    def make(self, which: str) -> nn.Module:
        factory = self.modality.make_tokenizer if which == "tokenizer" else self.modality.make_detokenizer
        with self.calling(f"make_{which}"):
            mod = factory(self.opts, self.cfg.model.interface_dim)
        if not isinstance(mod, nn.Module):
            raise self.fail(f"make_{which}", f"expected an nn.Module, got {type(mod).__name__}")
        if which == "detokenizer":
            try:
                check_detokenizer(mod)
            except RinkitError as e:
                raise ContractError(plugin_line(self.cfg.modality, e)) from None
        return mod

    def tokens(self, tok: nn.Module, x, context):
        with self.calling("tokenizer"):
            out = tok(x, context)
        try:
            out, state = tokens_and_state(out, tok)
        except RinkitError as e:
            raise ContractError(plugin_line(self.cfg.modality, e)) from None
        b, d = x.shape[0], self.cfg.model.interface_dim
        if not torch.is_tensor(out) or out.dim() != 3 or out.shape[0] != b or out.shape[2] != d:
            raise self.fail("tokenizer", f"expected tokens of shape ({b}, N, {d}) (batch, tokens, "
                                         f"model.interface_dim), got {_shape(out)}")
        if not out.is_floating_point():
            raise self.fail("tokenizer", f"expected float tokens, got {out.dtype}")
        return out, state

    def detokenize(self, detok: nn.Module, tokens, context, state, target):
        with self.calling("detokenizer"):
            out = detok(tokens, context, state)
        if not torch.is_tensor(out) or tuple(out.shape) != tuple(target.shape):
            raise self.fail("detokenizer", f"expected output shape {tuple(target.shape)}, exactly the "
                                           f"input's (no broadcasting), got {_shape(out)}")
        return out

    def tokenizer_pair(self, x, context) -> str:
        """tokenizer -> detokenizer on x; returns a description."""
        tok, detok = self.make("tokenizer").to(x.device), self.make("detokenizer").to(x.device)
        tokens, state = self.tokens(tok, x, context)
        self.detokenize(detok, tokens, context, state, x)
        return f"{tuple(tokens.shape)} tokens" + (" + state" if state is not None else "")

    def data(self, dataset, n: int):
        """n items spread over the dataset -> (x, labels, target, context)."""
        spec = self.cfg.dataset
        who, hook = owner("dataset", (spec.modality, spec.name)), f"rinkit_datasets '{spec.modality}/{spec.name}'"
        if dataset is None:
            with self.calling("build", who, hook):
                dataset = spec.build(self.opts, self.cfg.data, "train")
        with self.calling("items", who, hook):
            size = len(dataset)
            if size < 1:
                raise self.fail("items", "expected at least one example, got an empty dataset", who, hook)
            idx = sorted(set(np.linspace(0, size - 1, min(n, size)).round().astype(int).tolist()))
            items = [dataset[i] for i in idx]
        xs, labels = [], []
        for item in items:
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise self.fail("items", f"expected (x, label) pairs, got {type(item).__name__}"
                                         f"{f' of {len(item)}' if isinstance(item, (tuple, list)) else ''}", who, hook)
            x, y = item
            if isinstance(x, np.ndarray):
                x = torch.from_numpy(x)
            if not (torch.is_tensor(x) and x.is_floating_point()):
                raise self.fail("items", f"expected x a float tensor, got {getattr(x, 'dtype', type(x).__name__)}",
                                who, hook)
            try:
                y = int(y)
            except (TypeError, ValueError):
                raise self.fail("items", f"expected an int label, got {type(y).__name__}", who, hook) from None
            xs.append(x)
            labels.append(y)
        shapes = {tuple(x.shape) for x in xs}
        if len(shapes) > 1:
            raise self.fail("items", f"expected one shape for every item, got {sorted(shapes)}", who, hook)
        x = torch.stack(xs).float()
        if not torch.isfinite(x).all():
            raise self.fail("items", "expected finite values, got NaN or inf", who, hook)
        lo, hi = float(x.min()), float(x.max())
        if lo < -1.001 or hi > 1.001:
            raise self.fail("items", f"expected values in [-1, 1], got [{lo:.3g}, {hi:.3g}]", who, hook)
        k = self.cfg.model.num_classes
        bad = [y for y in labels if not (0 <= y < k)] if k else []
        if bad:
            raise self.fail("items", f"expected labels in [0, {k}) (model.num_classes), got {bad[0]}", who, hook)
        return x, torch.tensor(labels), who, hook

    def split(self, x, shape, ctx_shape, who, hook):
        """x -> (target, context) through `condition`; both must have the declared shapes."""
        context = None
        if self.modality.condition is not None:
            with self.calling("condition"):
                out = self.modality.condition(x, self.opts)
            if not (isinstance(out, tuple) and len(out) == 3):
                raise self.fail("condition", f"expected (target, context, loss_mask), got {type(out).__name__}")
            x, context, mask = out
            if tuple(context.shape[1:]) != ctx_shape:
                raise self.fail("context_shape", f"expected {tuple(context.shape[1:])} (what condition "
                                                 f"returns), got {ctx_shape}")
            if mask is not None and torch.broadcast_shapes(mask.shape, x.shape) != x.shape:
                raise self.fail("condition", f"expected a loss_mask that broadcasts to {tuple(x.shape)}, "
                                             f"got {tuple(mask.shape)}")
        if tuple(x.shape[1:]) != shape:
            what = "the targets `condition` makes of" if context is not None else "the items of"
            raise self.fail("sample_shape", f"expected {tuple(x.shape[1:])}, the shape of {what} dataset "
                                             f"{hook.split(' ', 1)[1]}, got {shape}")
        return x, context

    @torch.enable_grad()
    def round_trip(self, shape, ctx_shape) -> str:
        """Fit a fresh tokenizer/detokenizer pair on noise; detokenize(tokenize(x)) must be x."""
        g = torch.Generator(self.device).manual_seed(0)

        def noise(n):
            draw = lambda s: torch.rand(n, *s, generator=g, device=self.device) * 2 - 1  # noqa: E731
            return draw(shape), (draw(ctx_shape) if ctx_shape is not None else None)
        torch.manual_seed(0)
        tok, detok = self.make("tokenizer").to(self.device), self.make("detokenizer").to(self.device)
        params = [*tok.parameters(), *detok.parameters()]
        if not params:
            return "no parameters to fit"
        opt = torch.optim.Adam(params, lr=FIT_LR)

        def mse(xb, cb):
            tokens, state = self.tokens(tok, xb, cb)
            return ((self.detokenize(detok, tokens, cb, state, xb) - xb) ** 2).mean()

        held, cheld = noise(FIT_BATCH)
        err = float("inf")
        for step in range(1, FIT_STEPS + 1):
            loss = mse(*noise(FIT_BATCH))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 10 == 0:
                with torch.no_grad():
                    err = float(mse(held, cheld) / held.var())
                if err < MAX_REL_ERROR:
                    break
        if not err < MAX_REL_ERROR:
            raise self.fail("detokenizer", f"expected detokenize(tokenize(x)) to reconstruct x (the modality is "
                                           f"declared invertible): relative error < {MAX_REL_ERROR} after fitting "
                                           f"the pair for {step} steps on noise, got {err:.2f}; does it put values "
                                           "back where the tokenizer took them?")
        return f"relative error {err:.3f} after {step} fitting steps on noise"

    def finish(self, x) -> str:
        gens = [torch.Generator().manual_seed(i) for i in range(len(x))]
        with self.calling("finish"):
            out = self.modality.finish(x, self.opts, gens)
        if not torch.is_tensor(out) or tuple(out.shape) != tuple(x.shape):
            raise self.fail("finish", f"expected samples of exactly the input's shape {tuple(x.shape)}, "
                                      f"got {_shape(out)}")
        if not torch.isfinite(out).all():
            raise self.fail("finish", "expected finite samples, got NaN or infinite values")
        return f"{tuple(out.shape[1:])} per sample"

    def writer(self, x, labels, context) -> str:
        with tempfile.TemporaryDirectory(prefix="rinkit-check-") as tmp:
            stem = Path(tmp) / "samples"
            with self.calling("write_samples"):
                out = self.modality.write_samples(x.clamp(-1, 1).cpu(), labels, stem, self.opts, context=context)
            if not isinstance(out, (list, tuple)) or not out:
                raise self.fail("write_samples", f"expected a list of the files written (under the stem {stem}), "
                                                 f"got {out!r}"[:300])
            missing = [p for p in out if not isinstance(p, (str, Path)) or not Path(p).exists()]
            if missing:
                raise self.fail("write_samples", f"expected paths that exist, got {str(missing[0])!r}")
            return f"{len(out)} file(s): " + ", ".join(Path(p).name for p in out[:3]) + (" ..." if len(out) > 3 else "")

    def metrics(self, x, labels, context) -> list[str]:
        from rinkit.evaluate.metrics import metric_specs, takes_context
        seen: dict[str, tuple[str, object]] = {}
        out = []
        for spec in metric_specs(self.cfg):
            t0 = time.perf_counter()
            who, hook = owner("metric", (spec.modality, spec.name)), f"rinkit_metrics '{spec.modality}/{spec.name}'"
            with self.calling("build", who, hook):
                fn = spec.build(self.opts, self.cfg.data)
            with self.calling("result", who, hook):
                kw = {"context": context} if context is not None and takes_context(fn) else {}
                res = fn(x.clamp(-1, 1).cpu(), labels, **kw)
            if not isinstance(res, Mapping):
                raise self.fail("result", f"expected dict[str, float], got {type(res).__name__}", who, hook)
            for key, v in res.items():
                if not isinstance(key, str):
                    raise self.fail("result", f"expected str keys, got {key!r}", who, hook)
                # plain numbers only: results go to metrics.json, stats.jsonl and TensorBoard as they are
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise self.fail("result", f"expected a float for {key!r}, got {type(v).__name__}", who, hook)
                if key in seen:
                    other, other_who = seen[key]
                    raise ContractError(f"metrics {other} ({other_who}) and '{spec.modality}/{spec.name}' ({who}) "
                                        f"both return the key {key!r}; one must rename it")
                seen[key] = (f"'{spec.modality}/{spec.name}'", who)
            self.ok(f"metric {spec.name}", ", ".join(res), t0)
            out.append(spec.name)
        return out


@contextlib.contextmanager
def _own_rng(device: torch.device):
    """The check draws random numbers; the run it precedes must not notice."""
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def check_shapes(cfg: ConfigLike, batch: int = 2) -> list[Check]:
    """The data-free part on the meta device: sample_shape, tokenizer (B, N, D) and a detokenizer
    output of exactly the input's shape. Costs nothing, for any model size."""
    c = _Checker(cfg, "meta")
    shape, ctx_shape = c.shapes()
    t0 = time.perf_counter()
    with torch.device("meta"):
        x = torch.zeros(batch, *shape)
        context = torch.zeros(batch, *ctx_shape) if ctx_shape is not None else None
        detail = c.tokenizer_pair(x, context)
    c.ok("tokenizer / detokenizer", detail, t0)
    return c.results


def check(cfg: ConfigLike, dataset=None, device: torch.device | str = "cpu", *, writer: bool = True,
          metrics: bool = True) -> list[Check]:
    """The whole contract on a few examples of the configured dataset (`dataset` if already built).
    Raises ContractError (one line) on the first violation; returns what was checked."""
    device = torch.device(device)
    c = _Checker(cfg, device)
    with _own_rng(device), torch.no_grad():
        shape, ctx_shape = c.shapes()
        t0 = time.perf_counter()
        x_all, y_all, who, hook = c.data(dataset, BATCH)
        target, context = c.split(x_all, shape, ctx_shape, who, hook)
        c.ok("dataset", f"{hook.split(' ', 1)[1]}: items {tuple(x_all.shape[1:])}, labels {y_all.tolist()}", t0)
        t0 = time.perf_counter()
        cb = context.to(device) if context is not None else None
        c.ok("tokenizer / detokenizer", c.tokenizer_pair(target.to(device), cb), t0)
        if c.modality.invertible:
            t0 = time.perf_counter()
            c.ok("round trip", c.round_trip(shape, ctx_shape), t0)
        labels = y_all if cfg.model.num_classes else None
        if c.modality.finish is not None:
            t0 = time.perf_counter()
            c.ok("finish", c.finish(target.to(device)), t0)
        if writer:
            t0 = time.perf_counter()
            c.ok("write_samples", c.writer(target, labels, context), t0)
        if metrics:
            c.metrics(target, labels, context)
    return c.results
