"""User errors at the CLI boundary: one line `vae-tf: error: ...`, exit status 2, no
traceback (only with --debug), and no partial output.

The data layer's own checks (truncated or corrupt gzip/IDX, wrong magic, image/label
count mismatch, .npz keys, NaN/inf and out-of-range pixels, empty data, unknown TFDS
names, TFDS offline) are tested as `DataError`s in tests/test_data.py; here a few of
them are driven through `vae-tf train` to check that the message reaches the user and
no run directory is left behind. Export-side errors (wrong latent size/dtype per
runtime, a failure mid-export) are tested with the export stage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vae_tf import data
from vae_tf.data import tfds_source
from vae_tf.cli import main


def run_cli(capsys, argv):
    """Runs `vae-tf ARGV` in-process; returns (exit status, stdout, stderr)."""
    try:
        rc = main(argv)
    except SystemExit as exit_:  # argparse errors
        rc = exit_.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc, err, *fragments):
    assert rc == 2, err
    assert err.startswith("vae-tf: error: "), err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


# === Config and flags: `vae-tf train` must not create the run directory ===


TRAIN_CONFIG_CASES = {
    "unknown_model_key": ({"model": {"latent_dimm": 3}}, ["unknown model config key(s) latent_dimm", "latent_dim"]),
    "unknown_train_key": ({"train": {"epoch": 3}}, ["unknown train config key(s) epoch", "epochs"]),
    "unknown_top_key": ({"modle": {}}, ["unknown run config key(s) modle"]),
    "unknown_likelihood": ({"model": {"likelihood": "poisson"}}, ["likelihood='poisson' is not supported", "bernoulli"]),
    "unknown_architecture": ({"model": {"architecture": "transformer"}}, ["architecture='transformer'", "mlp, conv"]),
    "unknown_posterior": ({"model": {"posterior": "made"}}, ["posterior='made'", "diag, full, iaf"]),
    "unknown_prior": ({"model": {"prior": "laplace"}}, ["prior='laplace'", "normal, mog, vamp"]),
    "negative_hidden_units": ({"model": {"hidden_units": [64, -1]}}, ["hidden_units=-1 must be > 0"]),
    "incompatible_version": ({"format_version": 99, "model": {}, "train": {}},
                             ["format_version 99 is not supported", "expects 4"]),
    "not_an_object": ([1, 2], ["must be a JSON object"]),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CONFIG_CASES))
def test_train_config_file_errors(tmp_path, capsys, case):
    config, fragments = TRAIN_CONFIG_CASES[case]
    out = tmp_path / "run"
    rc, _, err = run_cli(capsys, ["train", "--out", str(out), "--config", write_json(tmp_path / "c.json", config)])
    assert_user_error(rc, err, *fragments)
    assert not out.exists()


def test_train_config_not_json(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text("{'model': ")
    rc, _, err = run_cli(capsys, ["train", "--out", str(tmp_path / "run"), "--config", str(path)])
    assert_user_error(rc, err, f"config file '{path}' is not valid JSON")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--latent-dim", "0"], ["latent_dim=0 must be > 0"]),
        (["--latent-dim", "-3"], ["latent_dim=-3 must be > 0"]),
        (["--batch-size", "-1"], ["batch_size=-1 must be > 0"]),
        (["--batch-size", "0"], ["batch_size=0 must be > 0"]),
        (["--epochs", "0"], ["epochs=0 must be > 0"]),
        (["--learning-rate", "-0.1"], ["learning_rate=-0.1 must be > 0"]),
        (["--hidden-units", "0"], ["hidden_units=0 must be > 0"]),
        (["--validation-fraction", "1.5"], ["validation_fraction=1.5 must be in [0, 1)"]),
        (["--preset", "huge"], ["unknown preset 'huge'", "default"]),
        (["--config", "/nonexistent/c.json"], ["config file '/nonexistent/c.json' does not exist"]),
        # The bundled digits have 4,000 training images.
        (["--batch-size", "5000"], ["batch size 5000 is larger than the 4000 training images", "--batch-size <= 4000"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0].startswith("--") else None,
)
def test_train_flag_errors(tmp_path, capsys, flags, fragments):
    out = tmp_path / "run"
    rc, _, err = run_cli(capsys, ["train", "--out", str(out), *flags])
    assert_user_error(rc, err, *fragments)
    assert not out.exists()


# NaN passes `value < 0` checks (every comparison with NaN is False), and inf passes `> 0`.
NUMBER_FLAG_CASES = [
    ("--learning-rate", "nan", "learning_rate=nan", "finite"),
    ("--learning-rate", "inf", "learning_rate=inf", "finite"),
    ("--learning-rate", "-1", "learning_rate=-1.0", "> 0"),
    ("--beta", "nan", "beta=nan", "finite"),
    ("--beta", "-1", "beta=-1.0", ">= 0"),
    ("--gaussian-sigma", "nan", "gaussian_sigma=nan", "finite"),
    ("--gaussian-sigma", "0", "gaussian_sigma=0.0", "> 0"),
    ("--gaussian-sigma", "-1", "gaussian_sigma=-1.0", "> 0"),
    ("--dropout", "nan", "dropout=nan", "finite"),
    ("--dropout", "-0.1", "dropout=-0.1", "[0, 1)"),
    ("--dropout", "1", "dropout=1.0", "[0, 1)"),
    ("--free-bits", "nan", "free_bits=nan", "finite"),
    ("--free-bits", "-1", "free_bits=-1.0", ">= 0"),
    ("--validation-fraction", "nan", "validation_fraction=nan", "finite"),
    ("--validation-fraction", "-0.1", "validation_fraction=-0.1", "must be"),
    ("--validation-fraction", "1", "validation_fraction=1.0", "must be"),
]


@pytest.mark.parametrize("flag, value, field, expected", NUMBER_FLAG_CASES,
                         ids=[f"{c[0]} {c[1]}" for c in NUMBER_FLAG_CASES])
def test_train_rejects_non_finite_and_out_of_range_numbers(tmp_path, capsys, flag, value, field, expected):
    out = tmp_path / "run"
    rc, _, err = run_cli(capsys, ["train", "--out", str(out), "--epochs", "1", flag, value])
    assert_user_error(rc, err, field, expected)
    assert not out.exists()


# Python's json reads the non-standard literals NaN, Infinity and -Infinity.
CONFIG_NUMBER_CASES = {
    "weight_decay_nan": ('{"train": {"weight_decay": NaN}}', ["weight_decay=nan", "finite"]),
    "weight_decay_negative": ('{"train": {"weight_decay": -1}}', ["weight_decay=-1", ">= 0"]),
    "learning_rate_nan": ('{"train": {"learning_rate": NaN}}', ["learning_rate=nan", "finite"]),
    "learning_rate_infinity": ('{"train": {"learning_rate": Infinity}}', ["learning_rate=inf", "finite"]),
    "beta_minus_infinity": ('{"model": {"beta": -Infinity}}', ["beta=-inf", "finite"]),
    "latent_dim_infinity": ('{"model": {"latent_dim": Infinity}}', ["latent_dim=inf", "must be int"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_NUMBER_CASES))
def test_train_config_file_numbers(tmp_path, capsys, case):
    text, fragments = CONFIG_NUMBER_CASES[case]
    path = tmp_path / "c.json"
    path.write_text(text)
    out = tmp_path / "run"
    rc, _, err = run_cli(capsys, ["train", "--out", str(out), "--config", str(path)])
    assert_user_error(rc, err, *fragments)
    assert not out.exists()


@pytest.mark.parametrize("content, fragments", [
    (b"\x89PNG\r\n\x1a\n\xea\x00\xff binary", ["is not UTF-8 text"]),
    (b"{'model': ", ["is not valid JSON"]),
    (b"model: {latent_dim: 3}", ["is not valid JSON"]),
    (b"", ["is not valid JSON"]),
    (b"[1, 2]", ["must be a JSON object"]),
    (b'"model"', ["must be a JSON object"]),
], ids=["binary", "python_dict", "yaml", "empty", "list", "string"])
def test_train_config_file_unreadable(tmp_path, capsys, content, fragments):
    """The message names the file (a decode error alone does not say which file)."""
    path = tmp_path / "c.json"
    path.write_bytes(content)
    out = tmp_path / "run"
    rc, _, err = run_cli(capsys, ["train", "--out", str(out), "--config", str(path)])
    assert_user_error(rc, err, f"config file '{path}'", *fragments)
    assert not out.exists()


def test_every_float_field_rejects_nan_and_infinity():
    """By construction: every float field of VAEConfig and TrainConfig (a new one too)."""
    import dataclasses

    from vae_tf.config import ConfigError, TrainConfig, VAEConfig

    fields = [(cls, f.name) for cls in (VAEConfig, TrainConfig) for f in dataclasses.fields(cls) if f.type == "float"]
    assert {"learning_rate", "weight_decay", "beta", "free_bits", "dropout", "gaussian_sigma"} <= {n for _, n in fields}
    for cls, name in fields:
        for value in (float("nan"), float("inf"), float("-inf")):
            with pytest.raises(ConfigError, match=rf"^{name}={value!r} must be a finite number"):
                cls(**{name: value})
    for cls, name in [(VAEConfig, "latent_dim"), (VAEConfig, "iwae_samples"), (TrainConfig, "epochs")]:
        with pytest.raises(ConfigError, match=rf"^{name}=inf must be a finite number"):
            cls(**{name: float("inf")})
    with pytest.raises(ConfigError, match=r"hidden_units=\(64, inf\) must be"):
        VAEConfig(hidden_units=(64, float("inf")))


@pytest.mark.parametrize("flag, value, field, expected", NUMBER_FLAG_CASES[:3],
                         ids=[f"{c[0]} {c[1]}" for c in NUMBER_FLAG_CASES[:3]])
def test_train_rejects_the_same_numbers_on_resume_config(tmp_path, capsys, flag, value, field, expected):
    """A run's config.json edited to hold NaN is refused by --resume too, naming the file's field."""
    out = tmp_path / "run"
    (out / "backup").mkdir(parents=True)
    (out / "backup" / "x").write_text("x")
    (out / "config.json").write_text('{"model": {}, "train": {"learning_rate": %s}}'
                                     % {"nan": "NaN", "inf": "Infinity", "-1": "-1"}[value])
    before = sorted(p.name for p in out.iterdir())
    rc, _, err = run_cli(capsys, ["train", "--resume", "--out", str(out)])
    assert_user_error(rc, err, field.replace("-1.0", "-1"), expected)
    assert sorted(p.name for p in out.iterdir()) == before


@pytest.mark.parametrize("flag, value, field, expected", NUMBER_FLAG_CASES,
                         ids=[f"{c[0]} {c[1]}" for c in NUMBER_FLAG_CASES])
def test_train_number_errors_also_through_the_config_file(tmp_path, capsys, flag, value, field, expected):
    name = flag[2:].replace("-", "_")
    section = "train" if name in ("learning_rate", "validation_fraction") else "model"
    literal = {"nan": "NaN", "inf": "Infinity"}.get(value, value)
    path = tmp_path / "c.json"
    path.write_text('{"%s": {"%s": %s}}' % (section, name, literal))
    out = tmp_path / "run"
    rc, _, err = run_cli(capsys, ["train", "--out", str(out), "--config", str(path)])
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{name}=" in err and expected in err, err
    assert not out.exists()


@pytest.mark.parametrize("flag, value", [("--likelihood", "poisson"), ("--architecture", "vit"),
                                         ("--posterior", "made"), ("--prior", "laplace")])
def test_unknown_names_rejected_by_argparse(tmp_path, capsys, flag, value):
    out = tmp_path / "run"
    rc, _, err = run_cli(capsys, ["train", "--out", str(out), flag, value])
    assert rc == 2
    assert f"argument {flag}: invalid choice: '{value}'" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_resume_without_a_run(tmp_path, capsys):
    out = tmp_path / "missing"
    rc, _, err = run_cli(capsys, ["train", "--resume", "--out", str(out)])
    assert_user_error(rc, err, "cannot resume", "has no config.json")
    assert not out.exists()


def test_resume_a_finished_run_and_train_over_one(tiny_run, capsys):
    before = sorted(os.listdir(tiny_run))
    rc, _, err = run_cli(capsys, ["train", "--resume", "--out", tiny_run])
    assert_user_error(rc, err, "cannot resume", "no backup/ directory")
    rc, _, err = run_cli(capsys, ["train", "--out", tiny_run])
    assert_user_error(rc, err, "already holds a run", "--resume")
    assert sorted(os.listdir(tiny_run)) == before


# === Data through `vae-tf train` (the DataError cases themselves: tests/test_data.py) ===


def _digits(n=300):
    splits = data.load_splits("bundled", validation_fraction=0.0)
    return (splits.train_images[:n, ..., 0] * 255).round().astype(np.uint8), splits.train_labels[:n].astype(np.uint8)


def _truncated_gzip(tmp_path):
    images, labels = _digits()
    data.write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    data.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-500])
    return f"idx:{tmp_path}", ["corrupt or truncated gzip", str(path)]


def _wrong_magic(tmp_path):
    images, labels = _digits()
    data.write_idx(tmp_path / "train-images-idx3-ubyte.gz", labels)  # labels where images belong
    data.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    return f"idx:{tmp_path}", ["magic 0x00000801, expected 0x00000803"]


def _count_mismatch(tmp_path):
    images, labels = _digits()
    data.write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    data.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:299])
    return f"idx:{tmp_path}", ["300 images but", "299 labels"]


def _npz_keys(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((3, 2, 2)))
    return f"npz:{tmp_path / 'd.npz'}", ["keys ['images']", "x_train"]


def _npz_nan(tmp_path):
    x = np.full((300, 28, 28), 0.5, np.float32)
    x[7, 3, 3] = np.nan
    np.savez(tmp_path / "d.npz", x_train=x)
    return f"npz:{tmp_path / 'd.npz'}", ["NaN or infinite"]


def _npz_range(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.full((300, 28, 28), 255.0))
    return f"npz:{tmp_path / 'd.npz'}", ["outside [0, 1]"]


def _npz_empty(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((0, 28, 28), np.uint8))
    return f"npz:{tmp_path / 'd.npz'}", ["no training images"]


def _tfds_unknown(tmp_path):
    return "tfds:mnistt", ["unknown TFDS dataset 'mnistt'", "mnist"]


DATA_CASES = {
    "truncated_gzip": _truncated_gzip,
    "wrong_magic": _wrong_magic,
    "count_mismatch": _count_mismatch,
    "npz_missing_keys": _npz_keys,
    "npz_nan_pixels": _npz_nan,
    "npz_out_of_range": _npz_range,
    "npz_empty": _npz_empty,
    "tfds_unknown_name": _tfds_unknown,
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_train_bad_data(tmp_path, capsys, case):
    src = tmp_path / "src"
    src.mkdir()
    spec, fragments = DATA_CASES[case](src)
    out = tmp_path / "run"
    rc, _, err = run_cli(capsys, ["train", "--out", str(out), "--data", spec, "--epochs", "1"])
    assert_user_error(rc, err, *fragments)
    assert not out.exists()


def test_train_tfds_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tfds_source, "_internet_reachable", lambda *args, **kwargs: False)
    out = tmp_path / "run"
    rc, _, err = run_cli(capsys, ["train", "--out", str(out), "--data", "tfds:mnist",
                                  "--data-dir", str(tmp_path / "tfds")])
    assert_user_error(rc, err, "cannot download TFDS dataset 'mnist': no internet")
    assert not out.exists()


# === Run directories: missing, without weights, wrong data ===


@pytest.fixture
def run_without_weights(tmp_path):
    """A run directory whose training never finished: config.json only."""
    run_dir = tmp_path / "unfinished"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"format_version": 1, "model": {}, "train": {}}))
    return run_dir


def _commands(run_dir, tmp_path):
    png = str(tmp_path / "out.png")
    return {
        "evaluate": ["evaluate", str(run_dir), "--iwae-samples", "2"],
        "sample": ["sample", str(run_dir), "--out", png],
        "reconstruct": ["reconstruct", str(run_dir), "--out", png],
    }


@pytest.mark.parametrize("command", ["evaluate", "sample", "reconstruct"])
def test_missing_run_directory(tmp_path, capsys, command):
    run_dir = tmp_path / "no-such-run"
    rc, out, err = run_cli(capsys, _commands(run_dir, tmp_path)[command])
    assert_user_error(rc, err, f"run directory '{run_dir}' does not exist")
    assert not (tmp_path / "out.png").exists() and not run_dir.exists()
    assert out == ""


@pytest.mark.parametrize("command", ["evaluate", "sample", "reconstruct"])
def test_run_directory_without_weights(tmp_path, capsys, run_without_weights, command):
    rc, out, err = run_cli(capsys, _commands(run_without_weights, tmp_path)[command])
    assert_user_error(rc, err, "has no trained weights", "weights/vae.index is missing", "--resume")
    assert not (tmp_path / "out.png").exists()
    assert sorted(os.listdir(run_without_weights)) == ["config.json"]
    assert out == ""


def test_run_directory_with_incompatible_config(tmp_path, capsys, tiny_run):
    import shutil

    run_dir = tmp_path / "old"
    shutil.copytree(tiny_run, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config["format_version"] = 0
    (run_dir / "config.json").write_text(json.dumps(config))
    rc, _, err = run_cli(capsys, ["sample", str(run_dir), "--out", str(tmp_path / "s.png")])
    assert_user_error(rc, err, "format_version 0 is not supported")
    assert not (tmp_path / "s.png").exists()


def test_evaluate_data_of_the_wrong_image_size(tmp_path, capsys, tiny_run):
    np.savez(tmp_path / "small.npz", x_train=np.zeros((20, 14, 14), np.uint8), x_test=np.zeros((5, 14, 14), np.uint8))
    rc, out, err = run_cli(capsys, ["evaluate", tiny_run, "--data", f"npz:{tmp_path / 'small.npz'}",
                                    "--iwae-samples", "2"])
    assert_user_error(rc, err, "expected images of shape [batch, 28, 28, 1]", "got shape [5, 14, 14, 1]")
    assert out == ""


@pytest.mark.parametrize("argv, fragments", [
    (["--num", "0"], ["--num must be positive"]),
    (["--digit", "3"], ["--digit needs a conditional model"]),
])
def test_sample_bad_arguments(tmp_path, capsys, tiny_run, argv, fragments):
    png = tmp_path / "s.png"
    rc, _, err = run_cli(capsys, ["sample", tiny_run, "--out", str(png), *argv])
    assert_user_error(rc, err, *fragments)
    assert not png.exists()


# === Export boundary (the artifact-side cases are tested with the export stage) ===


def _export_ready():
    try:
        from vae_tf.export import export_run  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _export_ready(), reason="vae_tf.export.export_run is not available")
@pytest.mark.parametrize("which", ["missing", "without_weights"])
def test_export_needs_a_trained_run(tmp_path, capsys, run_without_weights, which):
    run_dir = tmp_path / "no-such-run" if which == "missing" else run_without_weights
    out = tmp_path / "exported"
    rc, _, err = run_cli(capsys, ["export", str(run_dir), "--out", str(out)])
    assert rc == 2 and err.startswith("vae-tf: error: ") and "Traceback" not in err
    assert ("does not exist" if which == "missing" else "no trained weights") in err
    assert not out.exists() or not any(out.rglob("*.pb"))


# === Tracebacks only with --debug (the installed console script) ===


def test_console_script_traceback_only_with_debug(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "vae-tf")
    argv = [script, "evaluate", str(tmp_path / "nope")] if os.path.exists(script) else [
        sys.executable, "-m", "vae_tf.cli", "evaluate", str(tmp_path / "nope")]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    plain = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert plain.returncode == 2
    assert "vae-tf: error: run directory" in plain.stderr
    assert "Traceback" not in plain.stderr
    debug = subprocess.run([argv[0], "--debug", *argv[1:]] if os.path.exists(script) else
                           [*argv[:3], "--debug", *argv[3:]], capture_output=True, text=True, timeout=120, env=env)
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "TrainingError: run directory" in debug.stderr


# === User errors vs bugs: only the UserError family is a one-line error ===


def _raising(exc):
    def command(args):
        raise exc

    return command


@pytest.mark.parametrize("exc", [ValueError("bad shape somewhere inside"), RuntimeError("boom"),
                                 KeyError("missing"), TypeError("unsupported operand")],
                         ids=lambda e: type(e).__name__)
def test_unexpected_errors_show_their_traceback_and_ask_for_a_report(tmp_path, capsys, monkeypatch, exc):
    from vae_tf import cli

    monkeypatch.setitem(cli.COMMANDS, "evaluate", _raising(exc))
    rc, out, err = run_cli(capsys, ["evaluate", str(tmp_path / "run")])
    assert rc == 1, err
    assert "Traceback (most recent call last)" in err
    assert f"{type(exc).__name__}: " in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("vae-tf: internal error (a bug): please report it"), last
    assert "with the command and the traceback above" in last
    assert "vae-tf: error:" not in err


def _user_errors():
    from vae_tf.config import ConfigError, UsageError, UserError
    from vae_tf.data import DataError
    from vae_tf.export.validate import ExportError
    from vae_tf.training import TrainingError

    return [UserError("plain user error"), ConfigError("bad config"), UsageError("--num must be positive"),
            DataError("bad data"), TrainingError("cannot resume"), ExportError("decoder.onnx: too far")]


@pytest.mark.parametrize("index", range(6))
def test_user_error_family_is_one_line(tmp_path, capsys, monkeypatch, index):
    from vae_tf import cli

    exc = _user_errors()[index]
    monkeypatch.setitem(cli.COMMANDS, "evaluate", _raising(exc))
    rc, _, err = run_cli(capsys, ["evaluate", str(tmp_path / "run")])
    assert_user_error(rc, err, str(exc))


def test_usage_error_is_still_a_value_error():
    from vae_tf.config import UsageError, UserError

    assert issubclass(UsageError, UserError) and issubclass(UsageError, ValueError)


@pytest.mark.parametrize("argv, fragments", [
    (["evaluate", "{run}", "--iwae-samples", "0"], ["--iwae-samples must be positive, got 0"]),
    (["evaluate", "{run}", "--batch-size", "0"], ["--batch-size must be positive, got 0"]),
    (["evaluate", "{run}", "--max-images", "-5"], ["--max-images must be positive, got -5"]),
    (["reconstruct", "{run}", "--num", "0", "--out", "{tmp}/r.png"], ["--num must be positive, got 0"]),
    (["report", "{run}", "--iwae-samples", "-1"], ["--iwae-samples must be positive, got -1"]),
    (["sample", "{run}", "--model", "{tmp}/m", "--out", "{tmp}/s.png"], ["either a RUN_DIR or --model"]),
    (["sample", "{run}", "--num", "4", "--digit", "3", "--out", "{tmp}/s.png"], ["--digit needs a conditional model"]),
], ids=["evaluate-k0", "evaluate-batch0", "evaluate-max-images", "reconstruct-num0", "report-k", "sample-both",
        "sample-digit"])
def test_cli_argument_checks_are_user_errors(tiny_run, tmp_path, capsys, argv, fragments):
    report_before = os.path.exists(os.path.join(tiny_run, "index.html"))
    rc, out, err = run_cli(capsys, [a.replace("{run}", tiny_run).replace("{tmp}", str(tmp_path)) for a in argv])
    assert_user_error(rc, err, *fragments)
    assert out == ""
    assert not list(tmp_path.iterdir())
    assert os.path.exists(os.path.join(tiny_run, "index.html")) == report_before


def test_a_file_that_cannot_be_written_is_not_a_bug(tiny_run, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    rc, _, err = run_cli(capsys, ["sample", tiny_run, "--num", "4", "--out", str(blocker / "s.png")])
    assert_user_error(rc, err, str(blocker))


def test_model_argument_errors_reached_from_the_cli_are_usage_errors(tiny_model):
    from vae_tf.config import UsageError

    with pytest.raises(UsageError, match=r"\[batch, 28, 28, 1\]"):
        tiny_model.elbo(np.zeros((2, 14, 14, 1), np.float32))
    with pytest.raises(UsageError, match="num_samples"):
        tiny_model.log_prob(np.zeros((2, 28, 28, 1), np.float32), num_samples=0)
