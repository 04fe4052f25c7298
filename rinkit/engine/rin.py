"""Recurrent Interface Network (Jabri, Fleet & Chen, ICML 2023), read top to bottom.

The engine sees only a set of *interface* tokens X (B x N x D). It never knows whether they came
from pixels, frames, spectrogram patches or points: modality plugins own the tokenizer and the
detokenizer (see rinkit/registry.py). A small set of *latent* tokens Z (B x M x d) does the heavy
compute. Each block

    read    Z <- Z + MHA(LN(Z), X);  Z <- Z + MLP(LN(Z))        latents gather from the interface
    compute K x [Z <- Z + MHA(LN(Z)); Z <- Z + MLP(LN(Z))]       self-attention on latents only
    write   X <- X + MHA(LN(X), Z);  X <- X + MLP(LN(X))        the interface reads the latents back

so cost follows M, not N. Faithful to the official TF code (docs/method.md §2):
  * only the query side is normalised in read/write (keys/values enter raw);
  * read/write attention runs at width min(D, d) (`rw_dim` overrides); biases; LayerNorm eps 1e-6;
  * dropout and drop-path act only inside the compute layers;
  * `num_latents` counts the time token and (if class-conditional) the class token;
  * the time embedding takes the noise level gamma (signal variance) x 1000, not t;
  * latent self-conditioning adds LN0(Z' + MLP(Z')) of the previous step's latents, with the
    final LayerNorm's scale and bias initialised to zero, so it starts as the identity;
  * weights start as the Keras code's initialisers (`model.init: official`, docs/method.md §6);
  * optional (`model.conv_kernel_size`, 0 = off as in the released configs): the official
    depthwise-conv unit on the interface after each write, on the grid the tokenizer names (for
    a point set, on the graph of each token's nearest tokens).
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from rinkit.engine.attention import BACKENDS, MultiHeadAttention
from rinkit.errors import RinkitError

LN_EPS = 1e-6
INITS = ("official", "glorot")  # RIN.reset_parameters


def layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=LN_EPS)


class MLP(nn.Module):
    """Dense(width * ratio) + GELU -> Dropout -> Dense(width)."""

    def __init__(self, dim: int, ratio: float, dropout: float = 0.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1, self.act, self.drop, self.fc2 = (nn.Linear(dim, hidden), nn.GELU(),
                                                   nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class DropPath(nn.Module):
    """Stochastic depth on a residual branch (per example)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class ComputeLayer(nn.Module):
    """Pre-LN Transformer encoder layer on the latents."""

    def __init__(self, dim, heads, mlp_ratio, dropout, drop_path, backend):
        super().__init__()
        self.norm1, self.attn = layer_norm(dim), MultiHeadAttention(dim, None, dim, heads, backend)
        self.norm2, self.mlp = layer_norm(dim), MLP(dim, mlp_ratio, dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z + self.drop_path(self.attn(self.norm1(z)))
        return z + self.drop_path(self.mlp(self.norm2(z)))


class CrossLayer(nn.Module):
    """`query` attends to `context` (only the query is normalised), then an MLP on the query
    stream. Used for both read (latents <- interface) and write (interface <- latents)."""

    def __init__(self, q_dim, kv_dim, heads, mlp_ratio, backend, inner_dim=None):
        super().__init__()
        self.norm_q = layer_norm(q_dim)
        self.attn = MultiHeadAttention(q_dim, kv_dim, inner_dim or min(q_dim, kv_dim), heads, backend)
        self.norm_mlp = layer_norm(q_dim) if mlp_ratio > 0 else None
        self.mlp = MLP(q_dim, mlp_ratio) if mlp_ratio > 0 else None

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_q(x), context)
        if self.mlp is not None:
            x = x + self.mlp(self.norm_mlp(x))
        return x


_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class TokenConv(nn.Module):
    """The official code's optional `conv_kernel_size` unit (pix2seq DepthwiseConvBlock), run on
    the interface after each write: X <- X + PW(SiLU(GN(DWConv_k(X)))) with X laid out on its
    token grid. Interface tokens otherwise never see each other (they mix only through the
    latents); this gives neighbours a direct path, e.g. across patch seams, or from a given video
    frame to the predicted frame after it. The pointwise layer starts at ~0 (the official 1e-10
    scale), so the unit starts as the identity. The grid comes from the tokenizer (`token_grid`):
    its sizes, and the interface index of each grid cell in row-major order (None = the first
    prod(sizes) tokens in order); tokens outside the grid are left alone.

    With `ndim` 0 the tokens lie on a graph instead of a grid (a point set: `token_graph`): the
    kernel's cells are a token and its k - 1 nearest tokens, nearest first, so a depthwise weight
    per (rank, channel) stands where a grid conv has one per (offset, channel); `order` is then
    the (B, G, k) interface index of each of the first G tokens' cells, new for every input."""

    def __init__(self, dim: int, kernel: int, ndim: int):
        super().__init__()
        if ndim not in _CONV and ndim != 0:
            raise ValueError(f"model.conv_kernel_size needs a 1-, 2- or 3-D token grid or a token graph, "
                             f"not {ndim}-D")
        self.graph = ndim == 0
        if self.graph:  # weights in a Conv1d's (D, 1, k) layout, applied over the neighbour ranks
            self.dw = nn.Conv1d(dim, dim, kernel, groups=dim)
        else:
            self.dw = _CONV[ndim](dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.GroupNorm(min(dim // 4, 32), dim, eps=1e-5)
        self.pw = nn.Linear(dim, dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Keras VarianceScaling(fan_avg, uniform): scale 1 for the depthwise kernel (its Keras
        shape k^n x D x 1), 1e-10 for the pointwise one; zero biases."""
        k, d = math.prod(self.dw.kernel_size), self.dw.in_channels
        nn.init.uniform_(self.dw.weight, -math.sqrt(6.0 / (k * (d + 1))), math.sqrt(6.0 / (k * (d + 1))))
        nn.init.uniform_(self.pw.weight, -math.sqrt(3e-10 / d), math.sqrt(3e-10 / d))
        nn.init.zeros_(self.dw.bias)
        nn.init.zeros_(self.pw.bias)

    def forward(self, x: torch.Tensor, sizes: tuple[int, ...], order: torch.Tensor | None) -> torch.Tensor:
        if self.graph:
            b, g, k = order.shape
            n, d = x.shape[1], x.shape[2]
            # one flat index_select: its backward (index_add) is 2x faster on a CPU than gather's
            flat = (order + n * torch.arange(b, device=x.device)[:, None, None]).reshape(-1)
            cells = x.reshape(b * n, d).index_select(0, flat).reshape(b, g, k, d)
            h = (cells * self.dw.weight[:, 0].t()).sum(2) + self.dw.bias                  # (B, G, D)
            h = self.pw(nn.functional.silu(self.norm(h.transpose(1, 2))).transpose(1, 2))
            return torch.cat([x[:, :g] + h, x[:, g:]], dim=1)
        g = math.prod(sizes)
        cells = x[:, :g] if order is None else x.index_select(1, order)
        h = self.dw(cells.transpose(1, 2).reshape(x.shape[0], x.shape[2], *sizes))
        h = self.pw(nn.functional.silu(self.norm(h)).flatten(2).transpose(1, 2))
        if order is None:
            return torch.cat([x[:, :g] + h, x[:, g:]], dim=1)
        return x.index_add(1, order, h)


class RINBlock(nn.Module):
    def __init__(self, interface_dim, latent_dim, depth, latent_heads, rw_heads, latent_mlp_ratio,
                 interface_mlp_ratio, dropout, drop_path, backend, rw_dim=None, write_context=False,
                 conv_kernel_size=0, conv_dims=2):
        super().__init__()
        self.read = CrossLayer(latent_dim, interface_dim, rw_heads, latent_mlp_ratio, backend, rw_dim)
        self.compute = nn.ModuleList(
            ComputeLayer(latent_dim, latent_heads, latent_mlp_ratio, dropout, drop_path, backend)
            for _ in range(depth))
        # A block with no compute layers only reads (as in the official code).
        self.write = (CrossLayer(interface_dim, latent_dim, rw_heads, interface_mlp_ratio, backend, rw_dim)
                      if depth > 0 else None)
        # Optional (model.write_context): the write's keys/values are the latents and the
        # interface's conditioning tokens (projected to the latent width), so a generated token
        # can fetch from the given data directly, not only through what the latents kept of it.
        self.context_proj = nn.Linear(interface_dim, latent_dim) if write_context and depth > 0 else None
        # a read-only block has no conv either (as the official code)
        self.conv = TokenConv(interface_dim, conv_kernel_size, conv_dims) if conv_kernel_size and depth > 0 else None

    def forward(self, x: torch.Tensor, z: torch.Tensor, n_cond: int = 0,
                grid: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.read(z, x)
        for layer in self.compute:
            z = layer(z)
        if self.write is not None:
            kv = z
            if self.context_proj is not None and n_cond:
                kv = torch.cat([z, self.context_proj(x[:, x.shape[1] - n_cond:])], dim=1)
            x = self.write(x, kv)
        if self.conv is not None:
            x = self.conv(x, *grid)
        return x, z


class TimeEmbedding(nn.Module):
    """gamma -> sinusoid(1000 * gamma) with dim/4 features, standardised across features,
    -> Dense(dim) + SiLU -> Dense(dim)   (the official `ScalarEmbedding`)."""

    def __init__(self, dim: int, scale: float = 1000.0):
        super().__init__()
        self.scale, self.freq_dim = scale, max(dim // 4, 2)
        half = self.freq_dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / half),
                             persistent=False)
        self.mlp = nn.Sequential(nn.Linear(self.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, gamma: torch.Tensor) -> torch.Tensor:
        arg = (gamma.float() * self.scale)[:, None] * self.freqs[None]
        emb = torch.cat([arg.sin(), arg.cos()], dim=-1)
        emb = (emb - emb.mean(-1, keepdim=True)) / (emb.std(-1, keepdim=True, unbiased=False) + 1e-5)
        return self.mlp(emb)


class SelfConditioning(nn.Module):
    """Warm start from the previous step's latents: LN0(Z' + MLP(LN(Z'))), LN0 zero-initialised."""

    def __init__(self, dim: int, mlp_ratio: float):
        super().__init__()
        self.norm_in, self.mlp = layer_norm(dim), MLP(dim, mlp_ratio)
        self.norm_out = layer_norm(dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The output LayerNorm starts at zero: the block adds nothing until it has learned to."""
        nn.init.zeros_(self.norm_out.weight)
        nn.init.zeros_(self.norm_out.bias)

    def forward(self, prev: torch.Tensor) -> torch.Tensor:
        return self.norm_out(prev + self.mlp(self.norm_in(prev)))


class RIN(nn.Module):
    """The shape-agnostic RIN core: interface tokens in, interface tokens and latents out."""

    def __init__(self, interface_dim: int = 256, latent_dim: int = 512, num_latents: int = 128,
                 blocks: int = 3, layers_per_block: int | Sequence[int] = 2,
                 latent_heads: int = 16, rw_heads: int = 8, latent_mlp_ratio: float = 4.0,
                 interface_mlp_ratio: float = 2.0, dropout: float = 0.0, drop_path: float = 0.0,
                 num_classes: int = 0, self_cond: bool = True, attention: str = "sdpa",
                 time_scale: float = 1000.0, rw_dim: int | None = None, init: str = "official",
                 write_context: bool = False, conv_kernel_size: int = 0, conv_dims: int = 2):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {INITS}")
        if attention not in BACKENDS:
            raise ValueError(f"unknown attention backend {attention!r}; choose one of {BACKENDS}")
        depths = [layers_per_block] * blocks if isinstance(layers_per_block, int) else list(layers_per_block)
        if len(depths) != blocks:
            raise ValueError(f"layers_per_block lists {len(depths)} depths for {blocks} blocks")
        self.num_classes, self.num_latents, self.latent_dim = num_classes, num_latents, latent_dim
        self.init, self.write_context = init, write_context
        self.conv_kernel_size, self.conv_dims = conv_kernel_size, conv_dims
        self.checkpoint_blocks = False  # activation checkpointing per block (train.activation_checkpointing)
        n_cond = 1 + (1 if num_classes > 0 else 0)  # time token (+ class token)
        if num_latents <= n_cond:
            raise ValueError(f"num_latents={num_latents} leaves no learned latents "
                             f"after {n_cond} conditioning token(s)")
        self.latents = nn.Parameter(torch.empty(num_latents - n_cond, latent_dim))
        self.time_embed = TimeEmbedding(latent_dim, time_scale)
        # Index num_classes is the null class (classifier-free guidance / unconditional).
        self.class_embed = nn.Embedding(num_classes + 1, latent_dim) if num_classes > 0 else None
        self.self_cond = SelfConditioning(latent_dim, latent_mlp_ratio) if self_cond else None
        self.blocks = nn.ModuleList(
            RINBlock(interface_dim, latent_dim, d, latent_heads, rw_heads, latent_mlp_ratio,
                     interface_mlp_ratio, dropout, drop_path, attention, rw_dim, write_context,
                     conv_kernel_size, conv_dims) for d in depths)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise every parameter as `self.init` says (docs/method.md §6).

        "official", as the official Keras code: Dense layers glorot-uniform with zero bias;
        attention kernels glorot over Keras' 3-D kernel shapes (MultiHeadAttention.reset_parameters);
        the class token as the one-hot Dense it replaces (rows glorot over (classes, d), the null
        row = the zero bias); learned latents truncated-normal sigma 0.02; the self-conditioning
        output LayerNorm zero. "glorot" (the init the small CPU presets were tuned with): glorot
        over every PyTorch Linear as shaped (fused q|k|v), class table N(0, 0.02)."""
        in_attention = {id(lin) for m in self.modules() if isinstance(m, MultiHeadAttention)
                        for lin in m.children()}
        for m in self.modules():  # one pass in module order: "glorot" draws as rinkit always did
            if isinstance(m, MultiHeadAttention):
                m.reset_parameters(self.init)
            elif isinstance(m, nn.Linear) and id(m) not in in_attention:  # Keras' Dense default
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.latents, std=0.02, a=-0.04, b=0.04)
        if self.class_embed is not None:
            if self.init == "official":
                k, d = self.class_embed.weight.shape
                bound = math.sqrt(6.0 / ((k - 1) + d))  # glorot of the (classes, d) Dense kernel
                nn.init.uniform_(self.class_embed.weight, -bound, bound)
                self.class_embed.weight[self.num_classes].zero_()  # null class = one-hot of zeros
            else:
                nn.init.normal_(self.class_embed.weight, std=0.02)
        if self.self_cond is not None:
            self.self_cond.reset_parameters()
        for m in self.modules():  # after the Linear pass above: the pointwise layer starts at ~0
            if isinstance(m, TokenConv):
                m.reset_parameters()

    def initial_latents(self, gamma: torch.Tensor, labels: torch.Tensor | None,
                        prev_latents: torch.Tensor | None) -> torch.Tensor:
        b = gamma.shape[0]
        parts = [self.latents.expand(b, -1, -1), self.time_embed(gamma)[:, None]]
        if self.class_embed is not None:
            if labels is None:
                labels = torch.full((b,), self.num_classes, device=gamma.device, dtype=torch.long)
            parts.append(self.class_embed(labels)[:, None])
        z = torch.cat(parts, dim=1).to(self.latents.dtype)
        if self.self_cond is not None:
            # No previous latents = zeros through the module (official pass 1 / first step).
            prev = torch.zeros_like(z) if prev_latents is None else prev_latents
            z = z + self.self_cond(prev)
        return z

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, labels: torch.Tensor | None = None,
                prev_latents: torch.Tensor | None = None, n_cond: int = 0,
                grid: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, N, D) interface tokens; gamma: (B,) noise level; labels: (B,) class indices,
        `num_classes` = null; prev_latents: (B, M, d) or None; n_cond: how many of the last
        interface tokens are clean conditioning (read by the write with `write_context`);
        grid: (sizes, order) of the interface tokens (TokenConv), needed with conv_kernel_size.
        Returns (X out, final latents)."""
        if self.conv_kernel_size and (grid is None or len(grid[0]) != self.conv_dims):
            raise ValueError(f"model.conv_kernel_size needs the interface's {self.conv_dims}-D token grid, "
                             f"got {None if grid is None else grid[0]}")
        z = self.initial_latents(gamma, labels, prev_latents)
        for block in self.blocks:
            if self.checkpoint_blocks and torch.is_grad_enabled():  # recompute in backward: memory for time
                x, z = torch.utils.checkpoint.checkpoint(block, x, z, n_cond, grid, use_reentrant=False)
            else:
                x, z = block(x, z, n_cond, grid)
        return x, z


# The tokenizer contract (rinkit.hookspec.Modality), one type for every modality, as
# nn.MultiheadAttention returns (output, weights or None): tokenizer(x, context) -> (tokens,
# state), state None unless the detokenizer needs per-example data from the input (a point
# cloud's grouping); detokenizer(tokens, context, state) -> x's shape.
EXPECTED_TOKENS = "(tokens, state), state None when unused (`return tokens, None`)"


def tokens_and_state(out: Any, tokenizer: Any) -> tuple[torch.Tensor, Any]:
    """A tokenizer's output, checked: the one place that tests its type. A bare tensor (the
    form before one type) would otherwise unpack along the batch when B is 2."""
    if isinstance(out, tuple) and len(out) == 2 and torch.is_tensor(out[0]):
        return out
    got = ("a tensor" if torch.is_tensor(out) else type(out).__name__ if not isinstance(out, tuple)
           else f"a tuple of {len(out)}" if len(out) != 2 else f"({type(out[0]).__name__}, state)")
    raise RinkitError(f"tokenizer {type(tokenizer).__name__} returned {got}; expected {EXPECTED_TOKENS}")


def check_detokenizer(detokenizer: Any) -> None:
    """The detokenizer takes the tokenizer's state as its third argument (None when unused)."""
    forward = getattr(detokenizer, "forward", detokenizer)
    try:
        inspect.signature(forward).bind(None, None, None)
    except TypeError:
        raise RinkitError(f"detokenizer {type(detokenizer).__name__}.forward{inspect.signature(forward)} takes "
                          "no state; expected forward(tokens, context, state), state None when unused") from None
    except ValueError:  # no signature to read (a builtin): the first call will tell
        pass


def token_conv_dims(tokenizer: Any) -> int:
    """The rank of the tokenizer's token grid, 0 for a token graph (`token_graph(x, k)`: the (B, G,
    k) indices of each of the first G tokens and its k - 1 nearest, nearest first)."""
    if callable(getattr(tokenizer, "token_graph", None)):
        return 0
    return len(token_grid(tokenizer)[0])


def token_grid(tokenizer: Any) -> tuple[tuple[int, ...], torch.Tensor | None]:
    """The tokenizer's `token_grid` (sizes, order), which model.conv_kernel_size lays the interface
    on: grid modalities have one (rinkit.plugin.PatchEmbed); a point set has a `token_graph`
    instead (see token_conv_dims) or neither."""
    grid = getattr(tokenizer, "token_grid", None)
    if grid is None:
        raise RinkitError(f"tokenizer {type(tokenizer).__name__} lays its tokens on no grid (no `token_grid`) "
                          "nor graph (no `token_graph`), which model.conv_kernel_size needs; "
                          "set model.conv_kernel_size=0")
    return tuple(grid[0]), grid[1]


class EstimateEmbedding(nn.Module):
    """x0 self-conditioning on the interface (optional): the previous x_0 estimate, tokenised by
    a second copy of the modality's tokenizer, is added to the interface tokens through a
    zero-initialised LayerNorm, so it starts as the identity as the latent warm start does. Adding
    a second linear patch embedding equals concatenating the estimate on the input channels
    (Chen et al.'s analog-bits self-conditioning), without the plugin knowing about it."""

    def __init__(self, tokenizer: nn.Module, dim: int):
        super().__init__()
        self.tokenizer, self.norm = tokenizer, layer_norm(dim)
        nn.init.zeros_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def forward(self, x0: torch.Tensor, context=None) -> torch.Tensor:
        tokens, state = tokens_and_state(self.tokenizer(x0, context), self.tokenizer)
        if state is not None:
            raise ValueError("x0 self-conditioning needs a tokenizer without state "
                             "(this one groups its input, so an estimate's tokens would not line up)")
        return self.norm(tokens)


class Denoiser(nn.Module):
    """Tokenizer -> RIN -> detokenizer. The tokenizer and detokenizer come from a modality
    plugin; `context` carries modality-specific clean conditioning (e.g. given video frames).
    With an `estimate` embedding (x0 self-conditioning) the model also takes `prev_x0`, the
    previous x_0 estimate in the data's shape (None = zeros, i.e. no estimate yet)."""

    def __init__(self, tokenizer: nn.Module, core: RIN, detokenizer: nn.Module,
                 estimate: EstimateEmbedding | None = None):
        super().__init__()
        check_detokenizer(detokenizer)
        self.tokenizer, self.core, self.detokenizer = tokenizer, core, detokenizer
        self.estimate = estimate
        # model.conv_kernel_size: the grid the interface is laid on (a buffer, so it follows .to()),
        # or, with conv_dims 0, a graph the tokenizer draws anew from each input (a point set)
        self.graph = bool(core.conv_kernel_size) and core.conv_dims == 0
        self.grid_sizes, order = (token_grid(tokenizer) if core.conv_kernel_size and not self.graph
                                  else (None, None))
        self.register_buffer("grid_order", order, persistent=False)
        if core.init == "official":
            self._init_plugin_layers()

    @torch.no_grad()
    def _init_plugin_layers(self) -> None:
        """The official stem (Conv2D/Conv3D) and readout (Dense) use Keras' defaults: glorot-uniform
        (fans over the receptive field, which torch's xavier_uniform_ computes the same way for a
        conv weight) and zero bias. Every Linear/Conv of the plugin's tokenizers and detokenizer gets
        it under init "official"; their other parameters (positional tables) keep the plugin's init."""
        parts = [self.tokenizer, self.detokenizer] + ([self.estimate.tokenizer] if self.estimate else [])
        for part in parts:
            for m in part.modules():
                if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                    if getattr(m, "zero_init", False):  # a layer that must start at zero (PixelHead)
                        nn.init.zeros_(m.weight)
                    else:
                        nn.init.xavier_uniform_(m.weight)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def forward(self, x_t: torch.Tensor, gamma: torch.Tensor, labels: torch.Tensor | None = None,
                prev_latents: torch.Tensor | None = None, context=None, prev_x0: torch.Tensor | None = None):
        # state: per-example data the detokenizer needs to map tokens back (which points formed
        # which group), None for most modalities
        tokens, state = tokens_and_state(self.tokenizer(x_t, context), self.tokenizer)
        if self.estimate is not None:
            tokens = tokens + self.estimate(torch.zeros_like(x_t) if prev_x0 is None else prev_x0, context)
        elif prev_x0 is not None:
            raise ValueError("prev_x0 given but this model was built without x0 self-conditioning")
        n_cond = 0
        if self.core.write_context:
            # the tokenizer says how many of its (last) tokens are clean conditioning
            n_cond = getattr(self.tokenizer, "num_cond_tokens", 0)
            if not n_cond:
                raise ValueError("model.write_context needs a modality whose tokenizer appends "
                                 "conditioning tokens (e.g. video with context_frames > 0)")
        grid = (self.grid_sizes, self.grid_order) if self.grid_sizes else None
        if self.graph:
            grid = ((), self.tokenizer.token_graph(x_t, self.core.conv_kernel_size))
        tokens, latents = self.core(tokens, gamma, labels, prev_latents, n_cond, grid)
        out = self.detokenizer(tokens, context, state)
        return out, latents
