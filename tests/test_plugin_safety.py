"""A broken plugin cannot break rinkit, and its mistakes are caught before training, in one line.

Each test installs examples/rinkit-timeseries (a complete third-party plugin) the way pip would,
as a package plus a dist-info with its entry point in a folder on sys.path, with one mistake
appended to (or prepended to) its module, and asserts the one-line message naming the plugin and,
for load failures, that built-in commands still work."""
import importlib
import re
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from rinkit import registry
from rinkit.cli import main
from rinkit.errors import RinkitError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rinkit-timeseries"
TS_OWNER = "plugin 'timeseries' (rinkit-timeseries 0.1)"
SHORT = ["train.steps=2", "train.batch_size=8", "train.warmup_steps=1", "train.eval_samples=0",
         "train.log_every=1", "train.tensorboard=false", "sampler.steps=2"]


@pytest.fixture
def site(tmp_path, monkeypatch):
    """install(patch=..., prepend=...) puts the example plugin (or a one-file plugin) on sys.path
    with a dist-info and entry point; the registry reloads on its next use."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    for env in (registry.ENV_DISABLE, registry.ENV_NO_AUTOLOAD, registry.ENV_PLUGINS):
        monkeypatch.delenv(env, raising=False)
    modules: list[str] = []

    def dist_info(module: str, dist: str, ep: str, version: str = "0.1"):
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[rinkit]\n{ep} = {module}\n")
        modules.append(module)

    def install(patch: str = "", prepend: str = "", module: str = "rinkit_timeseries",
                dist: str = "rinkit-timeseries", ep: str = "timeseries", source: str | None = None):
        if source is not None:  # a one-file plugin
            (root / f"{module}.py").write_text(textwrap.dedent(source))
        else:
            shutil.copytree(EXAMPLE / "rinkit_timeseries", root / module)
            init = root / module / "__init__.py"
            future = "from __future__ import annotations\n"
            text = init.read_text().replace(future, future + textwrap.dedent(prepend))
            init.write_text(text + "\n" + textwrap.dedent(patch))
        dist_info(module, dist, ep)
        importlib.invalidate_caches()
        registry.reset()
        return root

    registry.reset()
    yield install
    for m in [m for m in sys.modules if m.split(".")[0] in modules]:
        del sys.modules[m]
    registry.reset()


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("rinkit: error:")]
    assert len(lines) == 1, err
    return lines[0]


def builtin_commands_work(capsys):
    assert run(["train", "--dry-run"], capsys)[0] == 0
    code, out, _ = run(["plugins"], capsys)
    assert code == 0 and "digits" in out


# -- the plugin works, and its preset travels with it ------------------------------------------------

def test_plugin_ships_its_default_preset_listed_with_its_owner(site, capsys, tmp_path):
    site()
    code, out, err = run(["plugins"], capsys)
    assert code == 0 and not err
    assert "timeseries (rinkit-timeseries 0.1)" in out
    preset_row = next(ln for ln in out.splitlines() if ln.split()[:1] == ["timeseries"] and ".yaml" in ln)
    assert "rinkit-timeseries 0.1" in preset_row and preset_row.endswith("configs/timeseries.yaml")
    code, out, _ = run(["train", "--modality", "timeseries", "--dry-run"], capsys)
    assert code == 0 and "name: timeseries" in out and "contract shapes ok" in out
    code, out, _ = run(["check", "--modality", "timeseries"], capsys)
    assert code == 0 and "round trip" in out and "metric spectrum" in out and "contract: ok" in out
    run_dir = tmp_path / "run"
    code, out, err = run(["train", "--modality", "timeseries", "--run-dir", str(run_dir), "--quiet",
                          "--set", *SHORT], capsys)
    assert code == 0, err
    assert (run_dir / "samples.npy").exists() and (run_dir / "samples.png").exists()


def test_plugins_table_columns_align_for_long_names(site, capsys):
    site(patch="""
        @hookimpl
        def rinkit_datasets():
            return [DatasetSpec(NAME, "waves", "harmonic waves", lambda o, d, split="train": Waves(o, split), 3),
                    DatasetSpec(NAME, "a-much-longer-dataset-name-than-any-built-in", "the same waves",
                                lambda o, d, split="train": Waves(o, split), 3)]
    """)
    out = run(["plugins"], capsys)[1]
    sections: dict[str, list[str]] = {}
    for line in out.splitlines():
        if not line.startswith(" "):
            current = sections.setdefault(line, [])
        else:
            current.append(line)
    for name, rows in sections.items():
        header = rows[0]
        starts = [m.start() for m in re.finditer(r"(?<=  )\S", header) if m.start() > 2]  # 2+ spaces apart
        assert len(starts) >= 2, header
        for row in rows[1:]:
            for s in starts:  # every cell starts where its header does
                assert row[s - 1] == " " and row[s] != " ", f"{name}\n{header}\n{row}"


def test_plugin_preset_cannot_replace_a_builtin_preset(site, capsys):
    root = site()
    (root / "rinkit_timeseries" / "configs" / "digits.yaml").write_text("name: digits\nmodality: timeseries\n")
    code, out, _ = run(["plugins"], capsys)
    assert f"{TS_OWNER} failed: preset 'digits' is already registered by rinkit 0.1.0" in out
    code, out, _ = run(["train", "--dry-run"], capsys)
    assert code == 0 and "modality: image" in out


# -- a broken plugin is attributed, skipped, and only blocks what needs it ----------------------------

@pytest.mark.parametrize("prepend,message", [
    ("import scipy_is_not_a_module_here\n",
     "import rinkit_timeseries: ModuleNotFoundError: No module named 'scipy_is_not_a_module_here'"),
    ("raise RuntimeError('this plugin needs CUDA')\n",
     "import rinkit_timeseries: RuntimeError: this plugin needs CUDA"),
], ids=["missing-dependency", "raises-at-import"])
def test_plugin_that_fails_to_import(site, capsys, prepend, message):
    site(prepend=prepend)
    code, out, err = run(["plugins"], capsys)
    assert code == 0 and f"{TS_OWNER} failed: {message}" in out
    assert "image" in out  # the built-ins are listed
    code, out, err = run(["train", "--modality", "timeseries", "--dry-run"], capsys)
    assert code == 2
    line = error_line(err)
    assert "unknown modality 'timeseries'" in line and f"{TS_OWNER} failed: {message}" in line
    builtin_commands_work(capsys)


@pytest.mark.parametrize("patch,message", [
    ("""
     @hookimpl
     def rinkit_datasets():
         raise ValueError("no data folder configured")
     """, "rinkit_datasets() raised ValueError: no data folder configured"),
    ("""
     @hookimpl
     def rinkit_modalities():  # write_samples forgotten
         return [Modality(NAME, "no writer", Options, Tokenizer, Detokenizer, sample_shape=sample_shape)]
     """, "rinkit_modalities() raised TypeError: Modality.__init__() missing 1 required positional argument: "
          "'write_samples'"),
    ("""
     @hookimpl
     def rinkit_modalities():  # not a list
         return Modality(NAME, "ts", Options, Tokenizer, Detokenizer, sample_shape, write)
     """, "rinkit_modalities returned Modality, expected a list of Modality"),
    ("""
     @hookimpl
     def rinkit_metrics():
         return [{"name": "spectrum"}]
     """, "rinkit_metrics returned a list holding dict, expected MetricSpec"),
    ("""
     @hookimpl
     def rinkit_modalities():
         return [Modality(NAME, "ts", dict, Tokenizer, Detokenizer, sample_shape, write)]
     """, "rinkit_modalities returned Modality 'timeseries' with options=dict, expected a pydantic BaseModel subclass"),
    ("""
     @hookimpl
     def rinkit_modalities():
         return [Modality(NAME, "ts", Options, Tokenizer, Detokenizer, sample_shape, write, finish="rotate")]
     """, "rinkit_modalities returned Modality 'timeseries' with finish='rotate', expected a callable or None"),
    ("""
     @hookimpl
     def rinkit_modality():  # misspelled
         return []
     """, "unknown hook rinkit_modality; did you mean rinkit_modalities?"),
    ("""
     def rinkit_metrics():  # @hookimpl forgotten
         return []
     """, "rinkit_metrics is not marked @hookimpl"),
    ("""
     @hookimpl
     def rinkit_presets():
         return ["configs/missing.yaml"]
     """, "rinkit_presets returned 'configs/missing.yaml', which is not an existing .yaml file"),
    ('NAME = "image"\n', "modality 'image' is already registered by plugin 'image' (rinkit 0.1.0)"),
    ("""
     @hookimpl
     def rinkit_datasets():
         return [DatasetSpec("image", "digits", "my digits", lambda o, d, split="train": Waves(o, split))]
     """, "dataset 'image/digits' is already registered by plugin 'image' (rinkit 0.1.0)"),
    ("""
     @hookimpl
     def rinkit_metrics():
         return [MetricSpec("image", "digits_fid", "my FID", lambda o, d: SpectrumMetric(o))]
     """, "metric 'image/digits_fid' is already registered by plugin 'image' (rinkit 0.1.0)"),
], ids=["hook-raises", "missing-field", "not-a-list", "wrong-item-type", "options-not-pydantic", "finish-not-callable",
         "misspelled-hook",
        "hookimpl-forgotten", "preset-missing", "modality-clash", "dataset-clash", "metric-clash"])
def test_broken_plugin_is_named_and_skipped(site, capsys, patch, message):
    site(patch=patch)
    code, out, err = run(["plugins"], capsys)
    assert code == 0 and not err
    assert any(ln.startswith(f"  {TS_OWNER} failed: {message}") for ln in out.splitlines()), out
    row = next(ln for ln in out.splitlines() if ln.split()[:2] == ["timeseries", "rinkit-timeseries"])
    assert row.split()[-1] == "failed"
    code, _, err = run(["train", "--modality", "timeseries", "--dry-run"], capsys)
    assert code == 2 and f"{TS_OWNER} failed: {message}" in error_line(err)
    from rinkit.testing import assert_plugin_loads  # what the plugin's own test suite would see
    with pytest.raises(AssertionError, match=re.escape(f"{TS_OWNER} failed: {message}")):
        assert_plugin_loads("timeseries")
    # every other command works; the failure is one warning line on stderr, once
    code, out, err = run(["train", "--dry-run"], capsys)
    assert code == 0 and err.count("rinkit: warning:") <= 1
    builtin_commands_work(capsys)


def test_two_third_party_plugins_claiming_one_name_both_fail_naming_each_other(site, capsys):
    site()
    site(module="ts_copy", dist="ts-copy", ep="ts-copy")
    registry.reset()
    with pytest.raises(RinkitError) as e:
        registry.get_modality("timeseries")
    assert (f"{TS_OWNER} failed: modality 'timeseries' is already registered by plugin 'ts-copy' (ts-copy 0.1)"
            in str(e.value))
    assert "plugin 'ts-copy' (ts-copy 0.1) failed: modality 'timeseries' is already registered by " \
           f"{TS_OWNER}" in str(e.value)
    builtin_commands_work(capsys)


def test_disable_and_autoload_switches(site, capsys, monkeypatch):
    site()
    monkeypatch.setenv(registry.ENV_DISABLE, "timeseries")
    registry.reset()
    code, out, err = run(["plugins"], capsys)
    assert "disabled" in next(ln for ln in out.splitlines() if ln.split()[:1] == ["timeseries"])
    assert "timeseries" not in registry.modalities() and "image" in registry.modalities()
    monkeypatch.setenv(registry.ENV_DISABLE, "rinkit-timeseries")  # the distribution's name works too
    registry.reset()
    assert "timeseries" not in registry.modalities()
    monkeypatch.delenv(registry.ENV_DISABLE)
    monkeypatch.setenv(registry.ENV_NO_AUTOLOAD, "1")  # only rinkit's built-ins
    registry.reset()
    assert "timeseries" not in registry.modalities()
    assert {"image", "audio", "points", "video"} <= set(registry.modalities())
    monkeypatch.setenv(registry.ENV_PLUGINS, "rinkit_timeseries")  # ... plus the plugins named
    registry.reset()
    assert "timeseries" in registry.modalities()
    builtin_commands_work(capsys)


def test_runtime_registration_refuses_a_misspelled_hook():
    class Plugin:
        @registry.hookimpl
        def rinkit_dataset(self):
            return []
    with pytest.raises(RinkitError, match="plugin 'oops' .*unknown hook rinkit_dataset; did you mean rinkit_datasets"):
        registry.register(Plugin(), "oops")
    assert registry.plugin_manager().get_plugin("oops") is None


# -- mistakes that used to train into garbage or fail after the last step ------------------------------

@pytest.mark.parametrize("patch,message", [
    ("""
     class Detokenizer(Detokenizer):
         def forward(self, tokens, context=None, state=None):
             return super().forward(tokens)[:, :1]  # (B, 1, L): broadcasts against (B, 2, L)
     """, "rinkit_modalities 'timeseries' detokenizer: expected output shape (4, 2, 64), exactly the input's "
          "(no broadcasting), got (4, 1, 64)"),
    ("""
     class Detokenizer(Detokenizer):
         def forward(self, tokens, context=None, state=None):
             return super().forward(tokens).roll(self.o.patch, -1)  # every patch one place late
     """, "rinkit_modalities 'timeseries' detokenizer: expected detokenize(tokenize(x)) to reconstruct x"),
    ("""
     class Tokenizer(Tokenizer):
         def forward(self, x, context=None):
             tokens, state = super().forward(x)
             return tokens.transpose(1, 2), state  # (B, D, N)
     """, "rinkit_modalities 'timeseries' tokenizer: expected tokens of shape (4, N, 64) (batch, tokens, "
          "model.interface_dim), got (4, 64, 16)"),
    ("""
     class Tokenizer(Tokenizer):
         def forward(self, x, context=None):
             return super().forward(x)[0]  # the form before one type: tokens alone
     """, "rinkit_modalities 'timeseries' tokenizer Tokenizer returned a tensor; expected (tokens, state), "
          "state None when unused (`return tokens, None`)"),
    ("""
     class Detokenizer(Detokenizer):
         def forward(self, tokens, context=None):
             return super().forward(tokens)
     """, "rinkit_modalities 'timeseries' detokenizer Detokenizer.forward(tokens, context=None) takes no "
          "state; expected forward(tokens, context, state), state None when unused"),
    ("""
     def sample_shape(o):
         return (o.length, o.channels)
     """, "rinkit_modalities 'timeseries' sample_shape: expected (2, 64), the shape of the items of dataset "
          "'timeseries/waves', got (64, 2)"),
    ("""
     def write(samples, labels, path, options, context=None):
         import numpy as np
         np.save(path, samples.numpy())  # and forgets to return the paths
     """, "rinkit_modalities 'timeseries' write_samples: expected a list of the files written"),
    ("""
     @hookimpl
     def rinkit_modalities():  # a finish that drops a channel
         return [Modality(NAME, "ts", Options, Tokenizer, Detokenizer, sample_shape, write, default_preset="timeseries",
                          invertible=True, finish=lambda x, o, gens: x[:, :1])]
     """, "rinkit_modalities 'timeseries' finish: expected samples of exactly the input's shape (4, 2, 64), "
          "got (4, 1, 64)"),
    ("""
     class SpectrumMetric(SpectrumMetric):
         def __call__(self, samples, labels=None):
             return {k: str(v) for k, v in super().__call__(samples, labels).items()}
     """, "rinkit_metrics 'timeseries/spectrum' result: expected a float for 'ts_spectrum_db', got str"),
    ("""
     class Waves(Waves):
         def __getitem__(self, i):
             x, y = super().__getitem__(i)
             return 3 * x, y
     """, "rinkit_datasets 'timeseries/waves' items: expected values in [-1, 1], got"),
], ids=["detokenizer-broadcasts", "detokenizer-not-inverse", "tokens-BDN", "tokens-old-form", "detokenizer-no-state",
         "sample-shape", "writer-returns-none", "finish-changes-shape",
        "metric-returns-str", "data-out-of-range"])
def test_contract_mistake_stops_before_the_first_step(site, capsys, tmp_path, patch, message):
    site(patch=patch)
    run_dir = tmp_path / "run"
    code, out, err = run(["train", "--modality", "timeseries", "--run-dir", str(run_dir), "--quiet",
                          "--set", *SHORT, "train.eval_samples=4"], capsys)
    assert code == 2
    line = error_line(err)
    assert line.startswith(f"rinkit: error: {TS_OWNER}, ") and message in line, line
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "stats.jsonl").exists()
    code, _, err = run(["check", "--modality", "timeseries"], capsys)
    assert code == 2 and message in error_line(err)
    builtin_commands_work(capsys)


def test_metric_keys_returned_by_two_plugins_are_an_error_naming_both(site, capsys):
    site()
    site(module="ts_extra", dist="ts-extra", ep="ts-extra", source="""
        from rinkit.registry import MetricSpec, hookimpl

        @hookimpl
        def rinkit_metrics():
            from rinkit_timeseries import SpectrumMetric
            return [MetricSpec("timeseries", "spectrum_again", "the same numbers", lambda o, d: SpectrumMetric(o))]
    """)
    registry.reset()
    code, _, err = run(["check", "--modality", "timeseries"], capsys)
    assert code == 2
    assert (f"metrics 'timeseries/spectrum' ({TS_OWNER}) and 'timeseries/spectrum_again' (plugin 'ts-extra' "
            "(ts-extra 0.1)) both return the key 'ts_spectrum_db'") in error_line(err)


def test_checkpoint_names_the_missing_plugin_package(site, capsys, tmp_path):
    root = site()
    run_dir = tmp_path / "run"
    assert run(["train", "--modality", "timeseries", "--run-dir", str(run_dir), "--quiet", "--set", *SHORT],
               capsys)[0] == 0
    shutil.rmtree(root)  # pip uninstall rinkit-timeseries
    for m in [m for m in sys.modules if m.startswith("rinkit_timeseries")]:
        del sys.modules[m]  # (not monkeypatch: it would put the uninstalled module back afterwards)
    importlib.invalidate_caches()
    registry.reset()
    code, _, err = run(["sample", "--ckpt", str(run_dir), "--per-class", "1"], capsys)
    assert code == 2
    assert error_line(err) == "rinkit: error: modality 'timeseries' needs rinkit-timeseries 0.1 (not installed)"


# -- the helpers a plugin's own tests use --------------------------------------------------------------

def test_testing_helpers(site):
    from rinkit.testing import ContractError, assert_plugin_loads, check_modality, registered
    site(patch="""
        class Detokenizer(Detokenizer):
            def forward(self, tokens, context=None, state=None):
                return super().forward(tokens)[:, :1]
    """)
    assert_plugin_loads("timeseries")
    with pytest.raises(ContractError, match="detokenizer: expected output shape"):
        check_modality("timeseries", metrics=False, writer=False)
    with pytest.raises(AssertionError, match="no rinkit plugin named 'nope'"):
        assert_plugin_loads("nope")
    import types
    mod = types.ModuleType("inline_plugin")
    mod.rinkit_modalities = registry.hookimpl(lambda: [])
    with registered(mod, "inline"):
        assert_plugin_loads("inline")
    assert registry.plugin_manager().get_plugin("inline") is None


@pytest.mark.parametrize("preset", ["digits", "audio-synth", "points-shapes", "points-voxels", "video-digits"])
def test_builtin_modalities_pass_their_own_contract(preset):
    from rinkit.config import load_config
    from rinkit.contract import check
    registry.reset()
    done = {c.name: c.detail for c in check(load_config(preset, None, ["train.metric_every=0"]), metrics=False)}
    assert "relative error" in done["round trip"]  # every built-in tokenizer is declared invertible
    assert done["write_samples"]
