import pytest
import torch

from rinkit.config import load_config

TINY = [
    "model.interface_dim=32", "model.latent_dim=32", "model.num_latents=8", "model.blocks=2",
    "model.layers_per_block=1", "model.latent_heads=2", "model.rw_heads=2",
    "modality_options.patch_size=2", "train.batch_size=16", "train.warmup_steps=2",
    "train.log_every=1", "train.ckpt_every=1000", "train.eval_samples=0", "sampler.steps=4",
]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _torch_threads():
    """Benchmarks called in-process with --threads set torch's thread count for the process; a
    later test that compares an in-process run with a subprocess (bit-exact resume) would then
    compare 1 thread with the default, whose reductions differ in the last bit on AVX-512 CPUs."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_cfg():
    """A digits config small enough to train a few steps in a second."""
    def make(*overrides):
        return load_config("digits", None, [*TINY, *overrides])
    return make


@pytest.fixture(autouse=True, scope="session")
def _python_sigint_handler():
    """A shell that starts pytest in the background (`cmd &`) leaves SIGINT ignored, and Python
    then installs no KeyboardInterrupt handler; the Ctrl-C tests raise real SIGINTs and need it."""
    import signal
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
