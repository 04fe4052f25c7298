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
    try:
        import xformers.ops  # noqa: F401
    except Exception:  # ImportError, or a wheel built for another torch
        return False
    return True


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa",
              dropout_p: float = 0.0) -> torch.Tensor:
    """q: (B, H, Lq, Dh), k/v: (B, H, Lk, Dh) -> (B, H, Lq, Dh)."""
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    if backend == "xformers":
        if not q.is_cuda:  # xformers has no CPU kernels; fall back silently to the same maths
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
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
