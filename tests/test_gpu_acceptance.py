"""benchmarks/gpu_acceptance.py on a machine without a GPU: it must say why it skips, and its
non-CUDA logic (bf16 autocast, DDP as the trainer wraps it, over gloo) must run and pass."""
import pytest
import torch

from benchmarks import gpu_acceptance as ga


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the checks would run")
def test_without_cuda_every_check_skips_with_the_reason(capsys):
    assert ga.main([]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[1:]
    assert [line.split()[:2] for line in lines] == [["SKIP", f"{c}:"] for c in ga.CHECKS]
    assert all("no CUDA device" in line for line in lines)
    assert ga.main(["--device", "cuda"]) == 2


def test_cpu_dry_run_passes_what_a_cpu_can_check():
    lines = []
    res = {r["check"]: r for r in ga.run("cpu", tiny=True, skip=("compile",), out=lines.append)}
    assert len(lines) == len(ga.CHECKS) and all(" " in line for line in lines)
    assert res["xformers"]["status"] == "SKIP" and "CUDA" in res["xformers"]["detail"]
    assert res["compile"]["status"] == "SKIP"
    for name in ("backends", "bf16-train", "bf16-sample", "ddp"):
        assert res[name]["status"] == "PASS", res[name]
    assert "refused" in res["backends"]["detail"]  # xformers on a CPU is refused by check_backends


def test_a_crashing_check_is_a_fail_line_and_exit_status_1(monkeypatch, capsys):
    def boom(device, tiny):
        raise RuntimeError("NCCL error: unhandled system error")
    monkeypatch.setattr(ga, "RUN", {**ga.RUN, "ddp": boom})
    assert ga.main(["--device", "cpu", "--tiny", "--skip", "backends", "xformers", "bf16-train",
                    "bf16-sample", "compile"]) == 1
    out = capsys.readouterr().out
    assert "FAIL ddp: RuntimeError: NCCL error: unhandled system error (test_gpu_acceptance.py:" in out
