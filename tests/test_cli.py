"""The `vae-tf` command line, in-process through `vae_tf.cli.main` (one real subprocess
for the console script): train -> evaluate / sample / reconstruct on one tiny run,
an IDX directory as data, config files and flags, and user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vae_tf import RunConfig
from vae_tf.cli import main
from vae_tf.data import write_idx

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY_FLAGS = ["--architecture", "mlp", "--hidden-units", "64", "--latent-dim", "4"]


def assert_png_with_content(path) -> None:
    """A real PNG whose pixels are not all one shade (ink on white)."""
    import matplotlib.image

    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC, path
    pixels = matplotlib.image.imread(path)[..., :3].mean(-1)  # grey levels in [0, 1]
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50
    dark = np.mean(pixels < 0.5)
    assert 0.005 < dark < 0.9, (path, dark)
    assert pixels.std() > 0.1, path


def last_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


# The trained model's IWAE NLL (nats) must lie below this, and at least UNTRAINED_MARGIN
# below the same model untrained (decoder at the mean image: 208 nats on the 500
# held-out bundled digits, k=20), so that an untrained or barely trained model fails.
# Measured, tiny MLP with the default objective: 1 epoch 204.5 (fails; hence 5), 5
# epochs 156.5 nats.
TRAINED_NLL_BOUND = 185.0
UNTRAINED_MARGIN = 25.0


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """`vae-tf train --data bundled --epochs 5 ...` (a tiny MLP): the run directory."""
    out = str(tmp_path_factory.mktemp("cli") / "run")
    assert main(["train", "--data", "bundled", "--epochs", "5", "--out", out, *TINY_FLAGS]) == 0
    return out


def untrained_iwae_nll(run_dir, images, labels, num_samples, train_images) -> float:
    """IWAE NLL of the run's model as training starts it: same config and seed,
    decoder bias at the mean training image (`initialize_output_bias`), no steps."""
    import tf_keras as keras

    from vae_tf.evaluation import evaluate_likelihood
    from vae_tf.model import VAE

    config = RunConfig.load(os.path.join(run_dir, "config.json"))
    keras.utils.set_random_seed(config.train.seed)
    model = VAE(config.model, noise_seed=config.train.seed)
    model.initialize_output_bias(train_images)
    return evaluate_likelihood(model, images, labels, num_samples=num_samples, batch_size=100, seed=0)["iwae_nll"]


def assert_trained_nll(result, run_dir, images, labels, train_images) -> None:
    untrained = untrained_iwae_nll(run_dir, images, labels, result["iwae_samples"], train_images)
    print(f"IWAE NLL: trained {result['iwae_nll']:.2f}, untrained {untrained:.2f} nats")
    assert 60 < result["iwae_nll"] < TRAINED_NLL_BOUND, result
    assert result["iwae_nll"] < untrained - UNTRAINED_MARGIN, (result, untrained)


def test_train_writes_the_run_directory_and_pictures(cli_run, capsys):
    for name in ("config.json", "history.json", "history.csv", "samples.png", "reconstructions.png"):
        assert os.path.isfile(os.path.join(cli_run, name)), name
    for name in ("weights", "checkpoints", "logs"):
        assert os.path.isdir(os.path.join(cli_run, name)), name
    config = RunConfig.load(os.path.join(cli_run, "config.json"))
    assert config.model.hidden_units == (64,) and config.model.latent_dim == 4
    assert config.train.epochs == 5 and config.train.data == "bundled"
    assert_png_with_content(os.path.join(cli_run, "samples.png"))
    assert_png_with_content(os.path.join(cli_run, "reconstructions.png"))


def test_train_conditional_draws_one_labelled_row_per_digit(tmp_path, monkeypatch):
    """`vae-tf train --conditional` writes samples.png as ten labelled rows of ten
    samples, row i drawn with label i."""
    import vae_tf.plots

    calls = []
    real = vae_tf.plots.save_labeled_rows

    def spy(rows, labels, path, title):
        calls.append((rows, labels, os.path.basename(path)))
        return real(rows, labels, path, title)

    monkeypatch.setattr(vae_tf.plots, "save_labeled_rows", spy)
    out = str(tmp_path / "run")
    assert main(["train", "--data", "bundled", "--epochs", "1", "--conditional", "--out", out, *TINY_FLAGS]) == 0
    (rows, labels), = [(rows, labels) for rows, labels, name in calls if name == "samples.png"]
    assert labels == [f"digit {i}" for i in range(10)]
    assert [r.shape for r in rows] == [(10, 28, 28, 1)] * 10
    assert_png_with_content(os.path.join(out, "samples.png"))


def test_evaluate_json(cli_run, bundled_splits, capsys):
    code = main(["evaluate", cli_run, "--data", "bundled", "--split", "test", "--iwae-samples", "20", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = last_json_line(captured.out)
    assert isinstance(result["neg_elbo"], float) and isinstance(result["iwae_nll"], float)
    from vae_tf.evaluation import eval_split

    images, labels, _ = eval_split(RunConfig.load(os.path.join(cli_run, "config.json")), "bundled", "test")
    assert_trained_nll(result, cli_run, images, labels, bundled_splits.train_images)
    assert result["iwae_nll"] <= result["neg_elbo"] + 0.5, result
    assert result["num_images"] == 500 and result["iwae_samples"] == 20
    assert result["split"] == "test" and result["data"] == "bundled"
    assert "no test split" in captured.err  # bundled: the held-out slice stands in


def test_sample_and_reconstruct_write_pngs(cli_run, tmp_path, capsys):
    samples = tmp_path / "x.png"
    assert main(["sample", cli_run, "--num", "16", "--out", str(samples)]) == 0
    assert_png_with_content(samples)
    recon = tmp_path / "y.png"
    assert main(["reconstruct", cli_run, "--data", "bundled", "--out", str(recon)]) == 0
    assert_png_with_content(recon)
    assert str(recon) in capsys.readouterr().out


def test_evaluate_on_an_idx_directory(cli_run, bundled_splits, tmp_path, capsys):
    """The held-out digits written as t10k-* IDX files (plus train files): `--split
    test` evaluates exactly those 120 images."""
    s = bundled_splits
    to_uint8 = lambda images: np.round(images[..., 0] * 255).astype(np.uint8)  # noqa: E731
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", to_uint8(s.train_images[:300]))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", s.train_labels[:300].astype(np.uint8))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", to_uint8(s.test_images[:120]))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", s.test_labels[:120].astype(np.uint8))
    code = main(["evaluate", cli_run, "--data", f"idx:{tmp_path}", "--split", "test", "--iwae-samples", "5",
                 "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = last_json_line(captured.out)
    assert result["num_images"] == 120 and result["data"] == f"idx:{tmp_path}"
    from vae_tf.evaluation import eval_split

    images, labels, _ = eval_split(RunConfig.load(os.path.join(cli_run, "config.json")), f"idx:{tmp_path}", "test")
    assert_trained_nll(result, cli_run, images, labels, bundled_splits.train_images)
    assert "no test split" not in captured.err


def test_config_file_overrides_the_preset_and_flags_override_the_file(tmp_path, monkeypatch, capsys):
    """Layering: preset, then the keys the --config file names, then flags. The run
    config reaching `train` is captured instead of training."""
    import vae_tf.training

    seen = {}

    def fake_train(run_config, run_dir, resume=False, **kwargs):
        seen.update(config=run_config, run_dir=run_dir, resume=resume)
        raise vae_tf.training.TrainingError("stop here")

    monkeypatch.setattr(vae_tf.training, "train", fake_train)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"model": {"latent_dim": 3, "beta": 2.0}, "train": {"epochs": 5, "batch_size": 32}}))
    code = main(["train", "--preset", "mlp", "--config", str(config_file), "--epochs", "2", "--beta", "0.5",
                 "--out", str(tmp_path / "run")])
    assert code == 2 and "stop here" in capsys.readouterr().err
    config = seen["config"]
    assert config.model.hidden_units == (400,) and config.model.activation == "relu"  # preset
    assert config.train.lr_schedule == "constant"  # preset
    assert config.model.latent_dim == 3 and config.train.batch_size == 32  # file
    assert config.model.beta == 0.5 and config.train.epochs == 2  # flags
    assert seen["resume"] is False


def test_resume_of_a_finished_run_is_a_clear_error(cli_run, capsys):
    assert main(["train", "--out", cli_run, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vae-tf: error:") and "no unfinished run" in err and "Traceback" not in err
    assert main(["train", "--out", cli_run, *TINY_FLAGS]) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "{tmp}/missing"], "does not exist"),
        (["sample", "{tmp}/missing", "--out", "{tmp}/x.png"], "does not exist"),
        (["train", "--preset", "nope", "--out", "{tmp}/run"], "unknown preset 'nope'"),
        (["train", "--config", "{tmp}/bad.json", "--out", "{tmp}/run"], "colour"),
        (["train", "--data", "idx:{tmp}/nowhere", "--out", "{tmp}/run", "--epochs", "1"], "nowhere"),
        (["train", "--latent-dim", "0", "--out", "{tmp}/run"], "latent_dim=0"),
    ],
)
def test_user_errors_exit_2_without_a_traceback(argv, message, tmp_path, capsys):
    (tmp_path / "bad.json").write_text(json.dumps({"model": {"colour": "red"}}))
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("vae-tf: error:") and message in err, err
    assert "Traceback" not in err
    assert not os.path.exists(tmp_path / "run" / "config.json")


def test_bad_flag_values_are_argparse_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", "x", "--hidden-units", "64,abc"])
    assert exc.value.code == 2
    assert "vae-tf train: error:" in capsys.readouterr().err


def test_console_script_help():
    exe = os.path.join(os.path.dirname(sys.executable), "vae-tf")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: vae-tf")
    for command in ("train", "evaluate", "sample", "reconstruct", "export"):
        assert command in proc.stdout


def test_train_on_all_images_without_validation(tmp_path, capsys):
    """`--validation-fraction 0` trains on everything but the test slice (4,500 of the
    bundled digits) and skips the validation metrics instead of failing."""
    out = tmp_path / "run"
    assert main(["train", "--data", "bundled", "--epochs", "1", "--validation-fraction", "0", "--out", str(out),
                 *TINY_FLAGS]) == 0
    assert "(no validation split)" in capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    assert history["split_sizes"] == {"train": 4500, "validation": 0, "test": 500}
    assert not any(k.startswith("val_") for k in history["history"]), sorted(history["history"])
    assert np.isfinite(history["history"]["loss"]).all()
    assert_png_with_content(out / "reconstructions.png")
