"""Noise schedules gamma(t): the signal variance at continuous time t in [0, 1].

x_t = sqrt(gamma) * x_0 + sqrt(1 - gamma) * eps; gamma(0) ~ 1 (clean), gamma(1) ~ 0 (noise).
Formulas follow the official RIN code (docs/method.md §4). Specs are strings so that configs
stay plain data: "cosine", "linear", "sigmoid(-3,3,0.9)" (the official "sigmoid@-3,3,0.9" and
"cosine@s,e,tau" spellings are accepted too).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

GAMMA_MIN = 1e-9


@dataclass(frozen=True)
class Schedule:
    kind: str
    start: float = 0.0
    end: float = 1.0
    tau: float = 1.0

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        t = t.double()  # the sigmoid's difference of near-equal numbers needs the precision
        if self.kind == "cosine" and (self.start, self.end, self.tau) == (0.0, 1.0, 1.0):
            # the official default, with its small offsets that keep gamma(0) < 1 and gamma(1) > 0
            g = torch.cos(((t + 2e-4) / (1 + 2.5e-4)) * math.pi / 2) ** 2
        elif self.kind == "cosine":
            s, e, tau = self.start, self.end, self.tau
            v_start = math.cos(s * math.pi / 2) ** (2 * tau)
            v_end = math.cos(e * math.pi / 2) ** (2 * tau)
            g = (v_end - torch.cos((t * (e - s) + s) * math.pi / 2) ** (2 * tau)) / (v_end - v_start)
        elif self.kind == "sigmoid":
            s, e, tau = self.start, self.end, self.tau
            sig = lambda v: 1 / (1 + torch.exp(-torch.as_tensor(v, dtype=torch.float64)))  # noqa: E731
            v_start, v_end = sig(s / tau), sig(e / tau)
            g = (v_end - sig((t * (e - s) + s) / tau)) / (v_end - v_start)
        elif self.kind == "linear":
            g = 1.0 - t
        else:  # guarded by parse_schedule
            raise ValueError(f"unknown schedule kind {self.kind!r}")
        return g.clamp(GAMMA_MIN, 1.0).float()

    def __str__(self) -> str:
        if self.kind == "linear" or (self.kind == "cosine" and (self.start, self.end, self.tau) == (0, 1, 1)):
            return self.kind
        return f"{self.kind}({self.start:g},{self.end:g},{self.tau:g})"


_SPEC = re.compile(r"^\s*(cosine|sigmoid|linear|simple_linear)\s*(?:[(@]\s*([^)]*?)\s*\)?)?\s*$")


def parse_schedule(spec: str) -> Schedule:
    """'cosine' | 'linear' | 'sigmoid(start,end,tau)' | 'cosine(start,end,tau)' -> Schedule."""
    m = _SPEC.match(spec)
    if not m:
        raise ValueError(f"bad noise schedule {spec!r}: expected cosine, linear, "
                         "sigmoid(start,end,tau) or cosine(start,end,tau)")
    kind, args = m.group(1), m.group(2)
    kind = "linear" if kind == "simple_linear" else kind
    if not args:
        if kind == "sigmoid":
            return Schedule("sigmoid", -3.0, 3.0, 1.0)
        return Schedule(kind)
    if kind == "linear":
        raise ValueError(f"bad noise schedule {spec!r}: linear takes no arguments")
    try:
        vals = [float(v) for v in args.split(",")]
    except ValueError:
        raise ValueError(f"bad noise schedule {spec!r}: arguments must be numbers") from None
    if len(vals) != 3:
        raise ValueError(f"bad noise schedule {spec!r}: expected 3 arguments (start, end, tau)")
    start, end, tau = vals
    if tau <= 0 or end <= start:
        raise ValueError(f"bad noise schedule {spec!r}: need end > start and tau > 0")
    if kind == "cosine" and not (0 <= start < end <= 1):
        raise ValueError(f"bad noise schedule {spec!r}: cosine start/end must lie in [0, 1]")
    return Schedule(kind, start, end, tau)
