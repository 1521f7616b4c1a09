"""Run directories on a non-local filesystem: everything a run reads and writes goes
through `tf.io.gfile`, so `gs://bucket/run` works as well as a local path. Tested on
TensorFlow's in-memory `ram://` filesystem (one per process, so all in-process), which
like an object store cannot rename a directory with its files."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import tensorflow as tf

from vae_tf import RunConfig, TrainConfig, VAEConfig, load, train
from vae_tf import training
from vae_tf.cli import main

MODEL = VAEConfig(architecture="mlp", hidden_units=(64,), latent_dim=4, prior="normal", iwae_samples=1,
                  kl_warmup_steps=0)
TRAIN = TrainConfig(epochs=2, batch_size=128, learning_rate=3e-3, lr_schedule="constant", steps_per_execution=1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _files(run_dir):
    return sorted(
        f"{root[len(run_dir):].lstrip('/')}/{name}".lstrip("/")
        for root, _, names in tf.io.gfile.walk(run_dir) for name in names
    )


def _csv_rows(path):
    with tf.io.gfile.GFile(path) as f:
        return list(csv.DictReader(io.StringIO(f.read())))


def _json(path):
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def ram_run():
    run_dir = "ram://test-remote/run"
    return train(RunConfig(model=MODEL, train=TRAIN), run_dir, verbose=0)


def test_train_writes_the_run_directory_through_gfile(ram_run):
    run_dir = ram_run.run_dir
    assert run_dir == "ram://test-remote/run"  # Not made "absolute" as a local path.
    files = _files(run_dir)
    for name in ("config.json", "history.json", "history.csv", "weights/vae.index", "checkpoints/last.index"):
        assert name in files, files
    assert any(name.startswith("weights/vae.data-") for name in files), files
    assert any(name.startswith("logs/train/events.out.tfevents") for name in files), files
    # Finished: no backup, no resume record, no temporary files or directories left over.
    assert not [n for n in files if n.startswith(("backup/", ".weights-tmp")) or ".tmp" in n or n == "resumes.json"]
    assert RunConfig.load(f"{run_dir}/config.json") == RunConfig(model=MODEL, train=TRAIN)
    summary = _json(f"{run_dir}/history.json")
    assert summary == ram_run.history and summary["resumed"] == []
    assert [int(r["epoch"]) for r in _csv_rows(f"{run_dir}/history.csv")] == [0, 1]


def test_load_from_gfile_gives_identical_outputs(ram_run, heldout_binary, assert_same_model):
    assert_same_model(ram_run.model, load(ram_run.run_dir), heldout_binary[0][:8])


def test_missing_and_unfinished_runs_on_gfile_are_clear_errors():
    with pytest.raises(training.TrainingError, match="does not exist"):
        load("ram://test-remote/missing")
    RunConfig(model=MODEL).save("ram://test-remote/unfinished/config.json")
    with pytest.raises(training.TrainingError, match="did not finish"):
        load("ram://test-remote/unfinished")


class _Crash(Exception):
    pass


def test_crash_mid_epoch_then_resume_on_gfile(monkeypatch, capsys):
    """Training stops with an exception in the middle of epoch 1 (0-based: the second),
    leaving backup/ in ram://; `train(resume=True)` continues at epoch 2 of 3 (counted
    from 1) from the restored optimizer step and keeps epoch 0's history row."""
    run_dir = "ram://test-remote/resumed"
    config = RunConfig(model=MODEL, train=TRAIN.replace(epochs=3))

    class CrashingTimer(training.EpochTimer):
        def on_train_batch_end(self, batch, logs=None):
            if self._epoch == 1 and batch == 3:
                raise _Crash("killed")

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch
            super().on_epoch_begin(epoch, logs)

    monkeypatch.setattr(training, "EpochTimer", CrashingTimer)
    with pytest.raises(_Crash):
        train(config, run_dir, verbose=0)
    monkeypatch.undo()
    files = _files(run_dir)
    assert any(n.startswith("backup/") for n in files) and "weights/vae.index" not in files, files
    killed_rows = _csv_rows(f"{run_dir}/history.csv")
    assert [int(r["epoch"]) for r in killed_rows] == [0]
    capsys.readouterr()

    result = train(config, run_dir, resume=True, verbose=0)
    out = capsys.readouterr().out
    steps = result.datasets.steps_per_epoch
    assert f"resuming at epoch 2 of 3 (1 epochs completed, optimizer step {steps})" in out, out
    expected = [{"at_epoch": 2, "completed_epochs": 1, "optimizer_step": steps}]
    assert result.history["resumed"] == expected
    assert _json(f"{run_dir}/history.json")["resumed"] == expected
    assert int(result.model.optimizer.iterations.numpy()) == 3 * steps
    rows = _csv_rows(f"{run_dir}/history.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert rows[0] == killed_rows[0]  # Epoch 0 was not run again.
    files = _files(run_dir)
    assert "weights/vae.index" in files and not [n for n in files if n.startswith("backup/")], files
    assert "resumes.json" not in files
    np.testing.assert_array_equal(load(run_dir).decode(tf.zeros([1, 4])).mean().numpy(),
                                  result.model.decode(tf.zeros([1, 4])).mean().numpy())


def test_cli_train_evaluate_sample_reconstruct_on_gfile(capsys):
    run_dir = "ram://test-remote/cli"
    assert main(["train", "--data", "bundled", "--epochs", "1", "--out", run_dir, "--architecture", "mlp",
                 "--hidden-units", "64", "--latent-dim", "4"]) == 0
    for name in ("samples.png", "reconstructions.png"):
        with tf.io.gfile.GFile(f"{run_dir}/{name}", "rb") as f:
            assert f.read(8) == PNG_MAGIC, name
    capsys.readouterr()
    assert main(["evaluate", run_dir, "--data", "bundled", "--iwae-samples", "2", "--max-images", "50",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["num_images"] == 50
    assert main(["sample", run_dir, "--num", "4", "--out", f"{run_dir}/pictures/x.png"]) == 0
    assert main(["reconstruct", run_dir, "--data", "bundled", "--num", "4", "--out", f"{run_dir}/pictures/y.png"]) == 0
    for name in ("x.png", "y.png"):
        with tf.io.gfile.GFile(f"{run_dir}/pictures/{name}", "rb") as f:
            assert f.read(8) == PNG_MAGIC, name


def test_export_to_a_gfile_url_is_a_clear_error(capsys):
    assert main(["export", "ram://test-remote/run", "--out", "ram://test-remote/exported"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vae-tf: error: --out ram://test-remote/exported is not a local directory"), err
    assert "Traceback" not in err
