"""Measurement primitives shared by the harness and the rin-pytorch worker (which runs in another
virtual environment, so this module imports nothing but torch and the standard library).

Peak memory. CUDA: torch.cuda.max_memory_allocated over the op, minus what was allocated before.
CPU: the process's resident-set high-water mark (VmHWM), reset before the op through
/proc/self/clear_refs ("5" resets the peak, Linux >= 4.0), after returning freed heap pages to
the OS with malloc_trim so that memory cached from the previous op (of the other model) cannot
hide this op's allocations. Where /proc is not writable, ru_maxrss deltas (lower bound).
"""
from __future__ import annotations

import ctypes
import os
import re
import resource
import statistics
import time

import torch


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _status_kb(field: str) -> int | None:
    try:
        m = re.search(rf"^{field}:\s+(\d+) kB", open("/proc/self/status").read(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """with PeakMemory(device) as pm: ...; pm.bytes = extra memory at the op's peak."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.bytes = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        _trim()
        self.proc = True
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.proc = False
        self.base = (_status_kb("VmRSS") if self.proc else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) or 0
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            peak = _status_kb("VmHWM") if self.proc else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.bytes = max(0, (peak or 0) - self.base) * 1024
        return False


def timed(fn, device) -> tuple[float, int]:
    """Run fn once: (seconds, peak extra bytes)."""
    with PeakMemory(device) as pm:
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        dt = time.perf_counter() - t0
    return dt, pm.bytes


def matmul_peak(device, dtype=torch.float32, n: int | None = None, reps: int = 5) -> dict:
    """Best achieved FLOP/s of an n x n x n matrix multiply (torch.mm) on this device, the MFU
    denominator. Best, not median: the peak is what the hardware can do when not disturbed."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 1536)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        times.append(time.perf_counter() - t0)
    flops = 2.0 * n ** 3
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "flops_per_s": flops / min(times),
            "median_flops_per_s": flops / statistics.median(times)}


def state_bytes(model, optimizer=None) -> int:
    """Parameters + gradients + optimizer state, counted exactly from the tensors."""
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    n += sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    if optimizer is not None:
        for st in optimizer.state.values():
            n += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v) and v.dim() > 0)
    return n


def _conv_backward_flops(grad_out, x, w, bias_sizes, stride, padding, dilation, transposed, output_padding,
                         groups, output_mask, out_val=None) -> int:
    """Each gradient of a convolution costs what its forward does (the same multiply-adds,
    re-arranged). torch's own formula counts a grouped conv's weight gradient `groups` times over
    (17x the forward for 16 groups, torch 2.14), which made the video copy readout's one grouped
    conv per clip look like most of a training step."""
    from torch.utils.flop_counter import conv_flop_count
    fwd = conv_flop_count(list(x.shape), list(w.shape), list(grad_out.shape), transposed)
    return fwd * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def count_flops(fn) -> int:
    """FLOPs of fn() by FlopCounterMode's own per-op formulas (torch.utils.flop_counter's
    registry: matmuls, convolutions, attention), applied in a plain dispatch mode. FlopCounterMode
    itself also tracks modules, and its tracker asserts on some models' no-grad passes."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    registry = dict(FlopCounterMode(display=False).flop_registry)
    registry[torch.ops.aten.convolution_backward] = _conv_backward_flops

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            f = registry.get(func._overloadpacket)
            if f is not None:
                Count.total += f(*args, **kwargs, out_val=out)
            return out

    with Count():
        fn()
    return int(Count.total)


def loadavg() -> list[float] | None:
    """1/5/15-minute load averages (None where the OS has none): how busy the machine was."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine() -> dict:
    import platform
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "host": platform.node()}
    if (load := loadavg()) is not None:
        info["loadavg"] = load
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
