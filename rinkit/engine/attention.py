"""Multi-head attention with interchangeable kernels.

The RIN blocks only ever call `attention(q, k, v, ...)` on (B, H, L, Dh) tensors; which kernel
runs is a config choice:

* ``sdpa``     – torch.nn.functional.scaled_dot_product_attention (flash / mem-efficient / math,
                 chosen by PyTorch for the device). The default.
* ``xformers`` – xformers.ops.memory_efficient_attention (optional extra, CUDA only).
* ``math``     – the textbook softmax(QK^T/sqrt(d))V, kept as the numerical reference for tests.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BACKENDS = ("sdpa", "xformers", "math")


def xformers_available() -> bool:
    return xformers_import_error() is None


def xformers_import_error() -> str | None:
    """Why `import xformers.ops` fails here (None when it works)."""
    try:
        import xformers.ops  # noqa: F401
    except Exception as e:  # ImportError, or a wheel built for another torch
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
    return None


def xformers_unavailable(device: torch.device | str) -> str | None:
    """Why the xformers kernel cannot run on `device` (None when it can): it needs the optional
    extra and CUDA (it has no CPU kernels)."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"runs only on CUDA devices, not {device.type}"
    if not torch.cuda.is_available():
        return "needs CUDA, which is not available"
    err = xformers_import_error()
    return None if err is None else f"is not importable ({err}; pip install 'rinkit[xformers]')"


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa",
              dropout_p: float = 0.0) -> torch.Tensor:
    """q: (B, H, Lq, Dh), k/v: (B, H, Lk, Dh) -> (B, H, Lq, Dh)."""
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    if backend == "xformers":  # never a silent swap: the caller asked for this kernel
        # (training checks this at setup, rinkit.build.check_backends; here for direct engine use)
        if (err := xformers_import_error()) is not None:
            raise RuntimeError(f"attention backend 'xformers' is not importable ({err}); "
                               "use the 'sdpa' backend (the same maths)")
        if not q.is_cuda:
            raise RuntimeError(f"xformers attention runs only on CUDA tensors, got {q.device.type}; "
                               "use the 'sdpa' backend (the same maths)")
        import xformers.ops as xops
        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                              p=dropout_p)
        return out.transpose(1, 2)
    if backend == "math":
        w = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        w = w.softmax(dim=-1)
        if dropout_p > 0:
            w = F.dropout(w, dropout_p)
        return w @ v
    raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")


class MultiHeadAttention(nn.Module):
    """Keras-style MHA as in the official RIN: biased q/k/v/out projections and an inner width
    that may differ from the query and key widths (read/write use min(D, d)).

    Projections are fused (q|k|v for self-attention, k|v for cross-attention): the parameter
    count is the paper's, but one larger GEMM runs closer to the machine's matmul peak."""

    def __init__(self, q_dim: int, kv_dim: int | None, inner_dim: int, heads: int,
                 backend: str = "sdpa"):
        super().__init__()
        if inner_dim % heads:
            raise ValueError(f"attention width {inner_dim} is not divisible by {heads} heads")
        self.heads, self.backend, self.inner = heads, backend, inner_dim
        self.self_attention = kv_dim is None
        if self.self_attention:
            self.qkv = nn.Linear(q_dim, 3 * inner_dim)
        else:
            self.q = nn.Linear(q_dim, inner_dim)
            self.kv = nn.Linear(kv_dim, 2 * inner_dim)
        self.out = nn.Linear(inner_dim, q_dim)

    @torch.no_grad()
    def reset_parameters(self, init: str = "official") -> None:
        """"official": Keras' MultiHeadAttention default, glorot-uniform over its 3-D kernels
        (in, heads, head_dim) and (heads, head_dim, out), for which Keras counts fans as for a
        conv kernel: fan_in = heads * in, fan_out = head_dim * in (resp. heads * head_dim and
        heads * out). The bound sqrt(6 / (in * (heads + head_dim))) is ~3x smaller than a
        glorot over the 2-D matrix (0.016 vs 0.054 for CIFAR-10's compute layers).
        "glorot": glorot-uniform over each fused PyTorch matrix as shaped. Biases are zero."""
        linears = [self.qkv] if self.self_attention else [self.q, self.kv]
        for lin in linears + [self.out]:
            nn.init.zeros_(lin.bias)
            if init == "glorot":
                nn.init.xavier_uniform_(lin.weight)
        if init == "glorot":
            return
        h, dh = self.heads, self.inner // self.heads
        for lin in linears:  # q, k, v kernels: (in, heads, head_dim)
            fan_in, fan_out = h * lin.in_features, dh * lin.in_features
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            nn.init.uniform_(lin.weight, -bound, bound)
        fan_in, fan_out = h * dh, h * self.out.out_features  # output kernel: (heads, head_dim, out)
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        nn.init.uniform_(self.out.weight, -bound, bound)

    def _heads(self, x: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        b, n, _ = x.shape
        x = x.view(b, n, parts, self.heads, -1).permute(2, 0, 3, 1, 4)  # parts, B, H, N, Dh
        return tuple(x.unbind(0))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if self.self_attention:
            q, k, v = self._heads(self.qkv(x), 3)
        else:
            (q,), (k, v) = self._heads(self.q(x), 1), self._heads(self.kv(context), 2)
        o = attention(q, k, v, self.backend)
        b, h, n, dh = o.shape
        return self.out(o.transpose(1, 2).reshape(b, n, h * dh))
