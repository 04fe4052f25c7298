"""Routing view: where RIN's latents read the interface, step by step (`rinkit routing`).

RIN's compute is adaptive because each block's *read* (latents <- interface cross-attention)
chooses which interface tokens the latents gather from, and the *write* (interface <- latents)
chooses which latents each token takes its update from. For one sampling trajectory this module
records both attention maps of every block at every network evaluation, and draws, over the
model's x_0 estimate of that evaluation, how much read attention each interface position receives
(the mean over heads and latents: a distribution over the N tokens).

Cost: nothing when not recording. The fused kernels (SDPA, xformers) return no weights, so the
probabilities are recomputed by `MultiHeadAttention.probabilities` from forward hooks that exist
only inside `record_attention`; ordinary training and sampling never run a hook.

Where a token's value goes on the data is the plugin's business (`Modality.token_view`: image
patches, video space-time patches, spectrogram patches, point groups, voxel blocks); a modality
without one gets a plain token-index plot and a note saying so.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rinkit.engine.rin import tokens_and_state

TOKEN_INDEX_NOTE = ("modality {m!r} supplies no token_view (rinkit.plugin.Modality): drawn as a "
                    "token-index plot (tokens in interface order, row-major), not over the data")


@contextlib.contextmanager
def record_attention(model):
    """Inside the block, every read and write attention of `model` (a Denoiser or RIN) appends
    {"block", "kind": "read"|"write", "probs": (B, H, Lq, Lk)} to the yielded list."""
    core = getattr(model, "core", model)
    log: list[dict] = []
    handles = []

    def hook(block: int, kind: str):
        def fn(mha, args, output):
            x = args[0]
            ctx = args[1] if len(args) > 1 else None
            log.append({"block": block, "kind": kind, "probs": mha.probabilities(x, ctx).cpu()})
        return fn
    try:
        for i, blk in enumerate(core.blocks):
            handles.append(blk.read.attn.register_forward_hook(hook(i, "read")))
            if blk.write is not None:
                handles.append(blk.write.attn.register_forward_hook(hook(i, "write")))
        yield log
    finally:
        for h in handles:
            h.remove()


@dataclass
class Routing:
    """One trajectory, first example only (E evaluations, K blocks, H heads, M latents, N tokens).

    read:  (E, K, H, M, N) read probabilities (latents <- interface; sum to 1 over N)
    write: (E, K', H, N, M') write probabilities (interface <- latents; sum to 1 over M'), K' the
           blocks that write (a block without compute layers only reads), M' = M (+ the given
           data's tokens with model.write_context)
    x0:    (E, *sample_shape) the model's x_0 estimate at each evaluation, in [-1, 1]
    sample: (*sample_shape) the final sample; label: its class (or None)
    states: the tokenizer's state per evaluation (e.g. point groups) or None
    context: the clean conditioning (e.g. given video frames) or None"""
    read: torch.Tensor
    write: torch.Tensor
    x0: torch.Tensor
    sample: torch.Tensor
    label: int | None
    states: list | None = None
    context: torch.Tensor | None = None
    gammas: list[float] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def received(self) -> torch.Tensor:
        """(E, K, N): read attention each interface token receives, mean over heads and latents
        (a distribution over the tokens)."""
        return self.read.mean(dim=(2, 3))


def _first(state):
    """Example 0 of a tokenizer state (tensors, or tuples/lists of them)."""
    if torch.is_tensor(state):
        return state[:1].detach().cpu()
    if isinstance(state, (tuple, list)):
        return type(state)(_first(s) for s in state)
    return state


@torch.no_grad()
def record_trajectory(m, label: int | None = None, steps: int | None = None, seed: int = 0,
                      **sampler) -> Routing:
    """Sample one example of `m` (a rinkit.api.Model) with the CLI's seed and sampler, recording
    every block's read and write attention and the x_0 estimate at each network evaluation."""
    from rinkit.sampling import conditioning_examples, generate
    if label is not None:
        label = m.check_classes([label])[0]
    elif m.num_classes:
        label = 0
    labels = torch.tensor([label]) if label is not None else None
    s = m.sampler_config(steps=steps, **{("name" if k == "sampler" else k): v for k, v in sampler.items()})
    cfg = m.cfg.replace(sampler=s)
    context = conditioning_examples(m.cfg, 1, labels)
    x0s, gammas, states = [], [], []
    denoiser = m.model

    def tap(x_t, gamma, *args, **kw):  # the samplers' model call: keep example 0's x_0 estimate
        pred, latents = denoiser(x_t, gamma, *args, **kw)
        x0 = m.diffusion.to_x0_eps(pred.float(), x_t, gamma, clip=True)[0]
        x0s.append((x0[:1] / m.diffusion.b).cpu())
        gammas.append(float(gamma[0]))
        return pred, latents

    def keep_state(mod, args, output):
        states.append(_first(tokens_and_state(output, mod)[1]))
    h = denoiser.tokenizer.register_forward_hook(keep_state)
    try:
        with record_attention(denoiser) as log:
            x = generate(tap, cfg, 1, labels, seed, m.device, context=context)
    finally:
        h.remove()
    k = len(denoiser.core.blocks)
    per_eval = len(log) // len(x0s)
    read = torch.stack([torch.stack([e["probs"][0] for e in log[i * per_eval:(i + 1) * per_eval]
                                     if e["kind"] == "read"]) for i in range(len(x0s))])
    writes = [torch.stack([e["probs"][0] for e in log[i * per_eval:(i + 1) * per_eval] if e["kind"] == "write"])
              for i in range(len(x0s))] if any(e["kind"] == "write" for e in log) else []
    write = torch.stack(writes) if writes else torch.empty(len(x0s), 0)
    assert read.shape[1] == k
    return Routing(read, write, torch.cat(x0s), x[0], label, states if any(s is not None for s in states) else None,
                   None if context is None else context[:1], gammas)


# -- drawing ----------------------------------------------------------------------------------------

def heat_rgb(values: np.ndarray) -> np.ndarray:
    """values in [0, 1] (any shape) -> uint8 RGB (shape + (3,)), matplotlib's inferno."""
    import matplotlib
    return (matplotlib.colormaps["inferno"](np.clip(values, 0, 1))[..., :3] * 255).round().astype(np.uint8)


def overlay(gray: np.ndarray, values: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """The data as a grey picture (H, W) in [0, 1] under a heatmap of `values` (H, W) in [0, 1]
    (what the plugins' token views draw): the heat covers the data in proportion to the value,
    so cold tokens show the data and all-zero values show the data alone."""
    base = np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=-1) * 255
    a = alpha * np.clip(values, 0, 1)[..., None]
    return ((1 - a) * base + a * heat_rgb(values)).round().astype(np.uint8)


def upsample(grid: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """Repeat each cell of a token grid over its patch (nearest neighbour)."""
    for axis, f in enumerate(factors):
        grid = np.repeat(grid, f, axis=axis - len(factors))
    return grid


def gray(x) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> (B, H, W) in [0, 1] (channel mean): a picture for `overlay`."""
    return ((x.detach().float().cpu().mean(1) + 1) / 2).numpy()


def patch_heat(values: np.ndarray, pictures: np.ndarray, grid: tuple[int, int], patch: tuple[int, int]) -> np.ndarray:
    """values (B, >= gh*gw) in row-major patch order over pictures (B, H, W) -> (B, H, W, 3): the
    token view of any 2-D patch grid (image patches, one frame's patches, spectrogram patches)."""
    gh, gw = grid
    v = values[:, :gh * gw].reshape(-1, gh, gw)  # extra (conditioning) tokens are not drawn here
    return np.stack([overlay(p, upsample(g, patch)) for p, g in zip(pictures, v)])


def token_index_plot(values: np.ndarray) -> np.ndarray:
    """The fallback view: (B, N) values -> (B, h, w, 3), tokens in index order on a near-square
    row-major grid (unused cells black)."""
    b, n = values.shape
    w = int(np.ceil(np.sqrt(n)))
    h = -(-n // w)
    grid = np.zeros((b, h * w))
    grid[:, :n] = values
    return heat_rgb(grid.reshape(b, h, w))


def _scale(img: np.ndarray, min_side: int = 96) -> np.ndarray:
    f = max(1, int(np.ceil(min_side / max(1, min(img.shape[:2])))))
    return np.repeat(np.repeat(img, f, axis=0), f, axis=1)


def _render(m, values: torch.Tensor, x: torch.Tensor, state, context) -> np.ndarray:
    """(B, N) values normalised to [0, 1] per example -> (B, H, W, 3) through the plugin's view."""
    v = values.float()
    v = (v / v.amax(dim=-1, keepdim=True).clamp_min(1e-12)).numpy()
    if m.modality.token_view is None:
        return token_index_plot(v)
    return m.modality.token_view(v, x, m.options, state=state, context=context)


def _grid(cells: list[list[np.ndarray]], rows: list[str], cols: list[str], title: str):
    """Cells (rows x cols of HxWx3 uint8, equal sizes) with row and column labels -> PIL image."""
    from PIL import Image, ImageDraw
    cells = [[_scale(c) for c in r] for r in cells]
    h, w = cells[0][0].shape[:2]
    left, top, pad = 90, 36, 4
    canvas = Image.new("RGB", (left + len(cols) * (w + pad), top + len(rows) * (h + pad)), "white")
    d = ImageDraw.Draw(canvas)
    d.text((4, 2), title, fill="black")
    for j, c in enumerate(cols):
        d.text((left + j * (w + pad), top - 14), c, fill="black")
    for i, (r, row) in enumerate(zip(rows, cells)):
        d.text((4, top + i * (h + pad) + h // 2 - 6), r, fill="black")
        for j, cell in enumerate(row):
            canvas.paste(Image.fromarray(cell), (left + j * (w + pad), top + i * (h + pad)))
    return canvas


def write_views(m, rec: Routing, out: str | Path, latents: int = 4, columns: int = 8) -> list[Path]:
    """Write into `out`: read_steps.png (blocks x evaluations: read attention received, over the
    x_0 estimate), read.gif (one frame per evaluation), latents.png (a few latents' read and write
    maps at the last evaluation, per block), routing.npz (the raw probabilities) and routing.json
    (what is where; the fallback note when the plugin draws no token view)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    e, k = rec.read.shape[:2]
    recv = rec.received()  # E, K, N
    state = lambda i: rec.states[i] if rec.states else None  # noqa: E731
    frames = [_render(m, recv[i], rec.x0[i:i + 1].expand(k, *rec.x0.shape[1:]),
                      _expand(state(i), k), _expand(rec.context, k)) for i in range(e)]  # E x (K, H, W, 3)
    wide = _scale(frames[0][0]).shape[1] / _scale(frames[0][0]).shape[0]  # video: a row of frames per cell
    columns = min(e, columns if wide < 2 else max(3, int(columns / wide * 2)))
    pick = sorted({round(j * (e - 1) / max(1, columns - 1)) for j in range(columns)})
    what = f"class {rec.label}" if rec.label is not None else "unconditional"
    files = []
    data = [_render(m, torch.zeros_like(recv[i, :1]), rec.x0[i:i + 1], _expand(state(i), 1),
                    _expand(rec.context, 1))[0] for i in range(e)]  # the x_0 estimate alone
    img = _grid([[data[i] for i in pick], *([frames[i][b] for i in pick] for b in range(k))],
                ["x0 estimate", *(f"block {b}" for b in range(k))],
                [f"step {i + 1}/{e}" for i in pick], f"{m.cfg.name}: read attention received ({what})")
    img.save(out / "read_steps.png")
    files.append(out / "read_steps.png")
    gif = [_grid([[data[i], *frames[i]]], ["read"], ["x0 estimate", *(f"block {b}" for b in range(k))],
                 f"step {i + 1}/{e}, gamma {rec.gammas[i]:.3f}") for i in range(e)]
    gif[0].save(out / "read.gif", save_all=True, append_images=gif[1:], duration=150, loop=0)
    files.append(out / "read.gif")
    # per-latent: what each of a few latents reads (and, per block, which tokens write from it)
    mm = rec.read.shape[3]
    chosen = list(range(min(latents, mm)))
    last = e - 1
    x_last = rec.x0[last:last + 1]
    rows, cells = [], []
    n_lat = m.cfg.model.num_latents
    for j in chosen:
        name = "time" if j == n_lat - (2 if m.num_classes else 1) else ("class" if m.num_classes and j == n_lat - 1 else f"latent {j}")
        vals = [rec.read[last, b, :, j].mean(0) for b in range(k)]
        if rec.write.dim() == 5:
            vals += [rec.write[last, b, :, :, j].mean(0) for b in range(rec.write.shape[1])]
        stacked = torch.stack(vals)
        cells.append(list(_render(m, stacked, x_last.expand(len(vals), *x_last.shape[1:]),
                                  _expand(state(last), len(vals)), _expand(rec.context, len(vals)))))
        rows.append(name)
    cols = [f"read b{b}" for b in range(k)] + ([f"write b{b}" for b in range(rec.write.shape[1])]
                                              if rec.write.dim() == 5 else [])
    _grid(cells, rows, cols, f"{m.cfg.name}: per latent, last step ({what})").save(out / "latents.png")
    files.append(out / "latents.png")
    np.savez_compressed(out / "routing.npz", read=rec.read.half().numpy(), write=rec.write.half().numpy(),
                        x0=rec.x0.numpy(), sample=rec.sample.numpy())
    files.append(out / "routing.npz")
    meta = {"model": m.cfg.name, "modality": m.cfg.modality, "label": rec.label, "evaluations": e,
            "blocks": k, "gammas": rec.gammas,
            "read": "E x K x heads x latents x interface tokens (softmax over tokens)",
            "write": "E x K' x heads x interface tokens x latents (softmax over latents)",
            "max_over_uniform": [[float(recv[i, b].max() * recv.shape[-1]) for b in range(k)] for i in range(e)]}
    if m.modality.token_view is None:
        meta["note"] = TOKEN_INDEX_NOTE.format(m=m.cfg.modality)
    (out / "routing.json").write_text(json.dumps(meta, indent=1))
    files.append(out / "routing.json")
    return files


def _expand(v, n: int):
    """Example 0 of a tensor / tuple of tensors repeated n times along the batch."""
    if v is None:
        return None
    if torch.is_tensor(v):
        return v[:1].expand(n, *v.shape[1:])
    if isinstance(v, (tuple, list)):
        return type(v)(_expand(s, n) for s in v)
    return v
