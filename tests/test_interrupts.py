"""Ctrl-C (SIGINT) and SIGTERM: one line on stderr, exit status 130 / 143, no
traceback, no partial output, and a training run that `--resume` continues.

The commands run as real subprocesses that receive real signals, sent once the
command is busy: training has written its first history row or printed "training: ...",
evaluate has printed its note, report its "computing log p(x)" line, and export has
created its temporary directory.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from vae_tf import interrupts
from vae_tf.cli import main

TINY = ["--architecture", "mlp", "--hidden-units", "64", "--latent-dim", "4", "--iwae-samples", "1",
        "--prior", "normal", "--kl-warmup-steps", "0"]
# Batches of 8: 563 steps per epoch (about 1 s; the first one also compiles, 10 s),
# long enough to land a signal inside an epoch.
EPOCHS = 4
TRAIN_FLAGS = [*TINY, "--epochs", str(EPOCHS), "--batch-size", "8", "--lr-schedule", "constant", "--no-jit", "--no-pictures"]
TIMEOUT = 180


def _start(tmp_path, *argv):
    """Starts `vae-tf ARGV` with stdout and stderr going to files; returns (proc, out, err)."""
    script = os.path.join(os.path.dirname(sys.executable), "vae-tf")
    cmd = [script, *argv] if os.path.exists(script) else [sys.executable, "-m", "vae_tf.cli", *argv]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env)
    return proc, out, err


def _wait_for(proc, condition, what, err_path):
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the command ended (rc {proc.returncode}) before {what}:\n{err_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _interrupt(proc, signum):
    proc.send_signal(signum)
    try:
        return proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()


def _rows(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _leftovers(root):
    """Temporary files and directories under `root` (names with tmp in them)."""
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root)
                  for n in dirs + files if "tmp" in n.lower())


def _tree(root):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files)


# === In-process: the handlers, holds and exit statuses ===


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_in_a_command_is_one_line_and_its_status(tmp_path, capsys, monkeypatch, signum, status):
    from vae_tf import cli

    def busy(args):
        os.kill(os.getpid(), signum)
        time.sleep(30)
        raise AssertionError("not interrupted")

    monkeypatch.setitem(cli.COMMANDS, "evaluate", busy)
    previous = signal.getsignal(signum)
    assert main(["evaluate", str(tmp_path / "run")]) == status
    err = capsys.readouterr().err
    assert err == "vae-tf: interrupted.\n"
    assert signal.getsignal(signum) is previous  # the handlers are put back


def test_a_held_signal_waits_for_release(tmp_path, capsys, monkeypatch):
    from vae_tf import cli

    seen = []

    def writes(args):
        with interrupts.held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            seen.append("still running after the signal")
            os.kill(os.getpid(), signal.SIGINT)  # a second signal while held: the first one counts
            time.sleep(0.2)
            seen.append("and after a second one")
        seen.append("not reached: release raises")

    monkeypatch.setitem(cli.COMMANDS, "report", writes)
    assert main(["report", str(tmp_path / "run")]) == 143
    assert seen == ["still running after the signal", "and after a second one"]
    assert capsys.readouterr().err == "vae-tf: interrupted; no partial report was left.\n"


# === `vae-tf train` ===

RESUME_LINE = r"vae-tf: interrupted (in|after) epoch (\d+); resume with `vae-tf train --resume --out {out}`"


@pytest.mark.parametrize("signum, status", [
    pytest.param(signal.SIGINT, 130, id="SIGINT", marks=pytest.mark.slow),  # 25 s with the resume
    pytest.param(signal.SIGTERM, 143, id="SIGTERM"),
])
def test_train_interrupted_mid_run_then_resumed(tmp_path, capsys, signum, status):
    run = tmp_path / "run"
    proc, _, err_path = _start(tmp_path, "train", "--out", str(run), *TRAIN_FLAGS)
    history = run / "history.csv"
    # Epoch 1 (0-based) is the first with the steady epoch time; 30% into epoch 2.
    _wait_for(proc, lambda: len(_rows(history)) >= 2, "two epochs completed", err_path)
    time.sleep(0.3 * float(_rows(history)[1]["epoch_seconds"]))
    rc = _interrupt(proc, signum)
    err = err_path.read_text()
    assert rc == status, err[-3000:]
    assert "Traceback" not in err
    match = re.fullmatch(RESUME_LINE.format(out=re.escape(str(run))), err.strip().splitlines()[-1])
    assert match, err[-3000:]
    # "in epoch N": N-1 epochs are complete; "after epoch N": N are.
    completed = int(match[2]) - (match[1] == "in")
    assert [int(r["epoch"]) for r in _rows(history)] == list(range(completed))
    assert any(files for _, _, files in os.walk(run / "backup"))
    assert not (run / "weights").exists()
    assert _leftovers(run) == []
    if signum == signal.SIGTERM:
        return  # resuming once is enough

    assert main(["train", "--resume", "--out", str(run), "--no-pictures"]) == 0, capsys.readouterr().err
    assert [int(r["epoch"]) for r in _rows(history)] == list(range(EPOCHS))
    assert (run / "weights" / "vae.index").exists()
    assert not (run / "backup").exists()


def test_train_interrupted_before_the_first_epoch_completed(tmp_path):
    run = tmp_path / "run"
    proc, out_path, err_path = _start(tmp_path, "train", "--out", str(run), *TRAIN_FLAGS)
    # "training: ..." is printed as training begins, right before epoch 1 starts.
    _wait_for(proc, lambda: "training: " in out_path.read_text(), "epoch 1 started", err_path)
    time.sleep(0.2)
    assert _rows(run / "history.csv") == [], "epoch 1 finished before the signal; the test needs slower epochs"
    rc = _interrupt(proc, signal.SIGINT)
    err = err_path.read_text()
    assert rc == 130, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"vae-tf: interrupted in epoch 1, before any epoch completed: nothing to resume, and what it had "
        f"written to {run} was removed; run the same command to start over."
    )
    assert not run.exists()


# === evaluate, report, export: no partial output ===


@pytest.fixture
def npz_without_test_split(tmp_path, bundled_splits):
    """Digits with no test split: evaluate prints a note on stderr just before it starts."""
    path = tmp_path / "digits.npz"
    np.savez(path, x_train=(bundled_splits.train_images[:300, ..., 0] * 255).astype(np.uint8))
    return f"npz:{path}"


def test_evaluate_interrupted_prints_no_result(tiny_run, tmp_path, npz_without_test_split):
    proc, out_path, err_path = _start(tmp_path, "evaluate", tiny_run, "--data", npz_without_test_split,
                                      "--iwae-samples", "20000", "--batch-size", "10", "--json")
    _wait_for(proc, lambda: "note:" in err_path.read_text(), "the evaluation started", err_path)
    time.sleep(0.5)
    rc = _interrupt(proc, signal.SIGINT)
    err = err_path.read_text()
    assert rc == 130, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "vae-tf: interrupted."
    assert out_path.read_text() == ""


def test_report_interrupted_leaves_no_partial_report(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "report", ignore_errors=True)
    for name in ("index.html",):
        if (run / name).exists():
            (run / name).unlink()
    before = _tree(run)
    proc, _, err_path = _start(tmp_path, "report", str(run), "--iwae-samples", "20000")
    _wait_for(proc, lambda: "computing log p(x)" in err_path.read_text(), "the report's log p(x)", err_path)
    time.sleep(0.5)
    rc = _interrupt(proc, signal.SIGINT)
    err = err_path.read_text()
    assert rc == 130, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "vae-tf: interrupted; no partial report was left."
    assert _tree(run) == before


def test_export_interrupted_leaves_no_partial_export(tiny_run, tmp_path):
    parent = tmp_path / "models"
    parent.mkdir()
    out = parent / "exported"
    proc, _, err_path = _start(tmp_path, "export", tiny_run, "--out", str(out))
    _wait_for(proc, lambda: any(".export-tmp-" in n for n in os.listdir(parent)), "the export started", err_path)
    time.sleep(0.5)
    rc = _interrupt(proc, signal.SIGINT)
    err = err_path.read_text()
    assert rc == 130, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "vae-tf: interrupted; no partial export was left."
    assert os.listdir(parent) == []
