"""A quiet `vae-tf` that reads well: the real command in a subprocess prints no
TensorFlow C++ log lines and no dependency warnings (`vae_tf.quiet`) unless
`--verbose` or VAE_TF_VERBOSE=1 asks for them; epoch lines in nats with fixed decimals
and a closing summary (`vae_tf.progress`, `vae_tf.cli`); `vae-tf --version`.

One tiny run trained by `vae-tf train` serves evaluate, sample and export (45-60 s in
all on 2 CPU cores).
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

import vae_tf
from vae_tf.cli import build_parser

TINY = ["--architecture", "mlp", "--hidden-units", "64", "--latent-dim", "4", "--iwae-samples", "1",
        "--prior", "normal", "--kl-warmup-steps", "0"]
EPOCHS = 2
# What TensorFlow, TFLite and the dependencies print on a CPU-only machine: absl log
# lines (I0000 ... port.cc:153] oneDNN custom operations are on ...), their pre-init
# note, cuInit, Python deprecation warnings, the TF logger, TFLite's runtime and quantizer.
NATIVE_LINE = re.compile(r"^[IWEF]\d{4} ", re.M)
NOISE = ("cuInit", "CUDA", "cuda", "oneDNN", "absl::InitializeLog", "This TensorFlow binary", "WARNING:tensorflow",
         "Warning:", "DeprecationWarning", "UserWarning", "tf.lite.Interpreter", "XNNPACK", "fully_quantize")
EPOCH_LINE = re.compile(
    r"epoch (\d+)/(\d+)  loss \d+\.\d\d  rec \d+\.\d\d  kl \d+\.\d\d  -elbo (\d+\.\d\d)  val -elbo (\d+\.\d\d)  \d+\.\d s"
)


def run_cli(*argv, **env):
    """`vae-tf ARGV` as a user runs it (the installed console script; `python -m
    vae_tf.cli` would import the checkout's vae_tf, which has no `vae_tf.export` unless
    installed editable): none of the test session's TF_CPP_MIN_LOG_LEVEL (conftest sets
    it) or warning settings; returns the process."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("TF_CPP_MIN_LOG_LEVEL", "VAE_TF_VERBOSE", "PYTHONWARNINGS")}
    environ.update(env)
    script = os.path.join(os.path.dirname(sys.executable), "vae-tf")
    cmd = [script, *argv] if os.path.exists(script) else [sys.executable, "-m", "vae_tf.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=300)


def assert_quiet(proc, stderr: str = "") -> None:
    """Status 0, nothing from TensorFlow or the dependencies on stdout or stderr, and
    stderr exactly `stderr` (the command's own lines)."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    for text in (proc.stdout, proc.stderr):
        assert not NATIVE_LINE.search(text), text[-3000:]
        assert not [n for n in NOISE if n in text], text[-3000:]
    assert proc.stderr == stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`vae-tf train --data bundled --epochs 2 ...` of a tiny MLP: (process, run directory)."""
    out = str(tmp_path_factory.mktemp("quiet") / "run")
    return run_cli("train", "--data", "bundled", "--epochs", str(EPOCHS), "--out", out, *TINY), out


def test_train_is_quiet_prints_epoch_lines_and_a_summary(trained):
    proc, out = trained
    assert_quiet(proc)
    lines = proc.stdout.splitlines()
    assert "\r" not in proc.stdout  # not a terminal: no progress bar
    assert re.fullmatch(r"data: bundled: 28x28x1 images, [\d,]+ train, [\d,]+ validation, [\d,]+ test; "
                        r"training images in memory", lines[0]), lines
    assert re.fullmatch(rf"training: {EPOCHS} epochs of \d+ steps, batch 64 x 6 copies, moved up to 1 px", lines[1]), lines
    epochs = [EPOCH_LINE.fullmatch(line) for line in lines[2 : 2 + EPOCHS]]
    assert all(epochs), lines
    assert [(int(m[1]), int(m[2])) for m in epochs] == [(e, EPOCHS) for e in range(1, EPOCHS + 1)]
    # The columns are the epoch's history in nats: -ELBO as a positive number.
    with open(os.path.join(out, "history.json")) as f:
        history = json.load(f)["history"]
    assert [float(m[3]) for m in epochs] == [round(-v, 2) for v in history["elbo"]]
    assert [float(m[4]) for m in epochs] == [round(-v, 2) for v in history["val_elbo"]]

    summary = lines[2 + EPOCHS :]
    best = min(range(EPOCHS), key=lambda i: -history["val_elbo"][i])
    assert re.fullmatch(
        rf"trained {EPOCHS} epochs in \d+(\.\d)? s, [\d,]+ images/s; validation -ELBO {-history['val_elbo'][-1]:.2f} "
        rf"nats \(best {-history['val_elbo'][best]:.2f}, epoch {best + 1}\)", summary[0]), summary
    assert summary[1] == (f"run directory: {out} (config.json, weights/, history.csv, TensorBoard logs/, "
                          "samples.png, reconstructions.png)")
    assert summary[2] == f"next: vae-tf evaluate {shlex.quote(out)}"
    assert summary[3] == f"      vae-tf export {shlex.quote(out)} --out {shlex.quote(out + '/export')}"
    assert len(summary) == 4
    for line in summary[2:]:  # the commands it suggests are valid
        args = build_parser().parse_args(shlex.split(line.split(":", 1)[-1])[1:])
        assert args.run_dir == out


def test_evaluate_sample_export_are_quiet(trained, tmp_path):
    _, run = trained
    proc = run_cli("evaluate", run, "--iwae-samples", "5", "--max-images", "100")
    assert_quiet(proc, stderr="note: bundled has no test split: using its held-out test slice of 500 images "
                              "(test_fraction 0.1, split_seed 0)\n")
    assert proc.stdout.startswith("bundled [test], 100 images: -ELBO ")

    picture = str(tmp_path / "samples.png")
    proc = run_cli("sample", run, "--num", "4", "--out", picture)
    assert_quiet(proc)
    assert proc.stdout == f"wrote {picture}\n"

    export = str(tmp_path / "export")
    proc = run_cli("export", run, "--out", export)
    assert_quiet(proc)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"exporting {run} to {export}: ")
    # A line per artifact as it is verified: name, size, difference from TF, time.
    names = ["saved_model (serving/1)", "decoder_float32.tflite", "decoder_float16.tflite",
             "decoder_dynamic_int8.tflite", "decoder_int8.tflite", "decoder.onnx"]
    for name, line in zip(names, lines[1:]):
        assert re.fullmatch(rf"  {re.escape(name)} +\d+ KiB  max \|diff\| vs TF \d\.\d\de[-+]\d\d  \d+\.\d s", line), line
    assert re.fullmatch(r"  explorer\.json +\d+ KiB  \d+\.\d s", lines[len(names) + 1]), lines
    assert lines[len(names) + 2 :] == [
        f"exported to {export} (manifest.json lists every file)",
        f"next: vae-tf explore {export}",
        f"      vae-tf sample --model {export} --num 64 --out samples.png",
    ]


@pytest.mark.parametrize("how", ["--verbose", "VAE_TF_VERBOSE=1"])
def test_verbose_shows_what_tensorflow_prints(trained, tmp_path, how):
    _, run = trained
    argv = ["sample", run, "--num", "4", "--out", str(tmp_path / "s.png")]
    proc = run_cli(*argv, "--verbose") if how == "--verbose" else run_cli(*argv, VAE_TF_VERBOSE="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # TensorFlow's static initializers log before absl is initialized (the oneDNN
    # notice on x86, the missing CUDA driver without a GPU): at least absl's note and a line.
    assert "absl::InitializeLog" in proc.stderr and NATIVE_LINE.search(proc.stderr), proc.stderr[-3000:]


def test_version():
    from importlib.metadata import version

    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout == f"vae-tf {vae_tf.__version__}\n"
    assert vae_tf.__version__ == version("vae-tf")


# === The pieces, in-process ===


def test_native_lines_are_filtered_and_the_rest_passes(capfd):
    """What reaches descriptor 2 inside `quiet_cli` (as TensorFlow's C++ writes it): log
    lines dropped, anything else passed on in order; `--verbose` passes everything."""
    from vae_tf.quiet import quiet_cli

    native = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
              b"I0000 00:00:1796187541.046065   15009 port.cc:153] oneDNN custom operations are on.\n"
              b"kept 1\n"
              b"E0000 00:00:1796187544.424039   15009 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n"
              b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
              b"fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32\n"
              b"F0000 00:00:1796187544.424039   15009 check.cc:1] Check failed: kept 2\n"
              b"kept 3")
    with quiet_cli(False):
        os.write(2, native)
    assert capfd.readouterr().err == "kept 1\nF0000 00:00:1796187544.424039   15009 check.cc:1] Check failed: kept 2\nkept 3"
    with quiet_cli(True):
        os.write(2, native)
    assert capfd.readouterr().err == native.decode()


def test_a_fatal_native_line_survives_an_abort():
    """The filter is a process of its own: what native code prints right before it
    aborts still reaches the terminal."""
    code = ("import os\nfrom vae_tf.quiet import quiet_cli\nwith quiet_cli(False):\n"
            "    os.write(2, b'I0000 00:00:1.5 1 a.cc:1] hidden\\nF0000 00:00:1.5 1 a.cc:2] Check failed: x\\n')\n"
            "    os.abort()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "F0000 00:00:1.5 1 a.cc:2] Check failed: x\n" in proc.stderr and "hidden" not in proc.stderr, proc.stderr


def test_epoch_line():
    from vae_tf.progress import epoch_line

    logs = {"loss": 91.3449, "reconstruction": 76.0912, "kl": 21.664, "elbo": -97.7551, "val_elbo": -106.4349,
            "epoch_seconds": 0.912, "val_loss": 1.0}
    assert epoch_line(2, 30, logs) == "epoch  3/30  loss 91.34  rec 76.09  kl 21.66  -elbo 97.76  val -elbo 106.43  0.9 s"
    assert epoch_line(0, 5, {"loss": 1, "elbo": -2}, seconds=12.34) == "epoch 1/5  loss 1.00  -elbo 2.00  12.3 s"
    # A latent hierarchy's KL per layer, bottom first.
    layered = {"kl": 27.85, "kl_1": 20.104, "kl_2": 7.746, "val_kl_1": 1.0}
    assert epoch_line(0, 1, layered, seconds=1) == "epoch 1/1  kl 27.85 (20.10 + 7.75)  1.0 s"


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_training_progress_bar_in_a_terminal(monkeypatch):
    from vae_tf import progress

    stdout = _Terminal()
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(progress, "REDRAW_SECONDS", 0.0)
    logger = progress.EpochLogger(bar=True, header="training: 1 epochs of 3 steps, batch 8")
    logger.set_params({"epochs": 1, "steps": 3})
    logger.on_train_begin()
    logger.on_epoch_begin(0)
    for step in range(3):
        logger.on_train_batch_end(step, {"loss": 100.0 - step, "elbo": -120.0})
    logger.on_epoch_end(0, {"loss": 98.0, "elbo": -120.0, "val_elbo": -125.0, "epoch_seconds": 1.25})
    logger.on_train_end()
    header, bar = stdout.getvalue().split("\n", 1)[0], stdout.getvalue().split("\n")[1]
    assert header == "training: 1 epochs of 3 steps, batch 8"
    drawn = bar.split("\r")
    assert drawn[0] == "" and len(drawn) == 5  # three bars, then the epoch line in their place
    assert drawn[1].startswith("epoch 1/1 [") and "1/3" in drawn[1] and "loss 100.00" in drawn[1]
    assert drawn[-1].rstrip() == "epoch 1/1  loss 98.00  -elbo 120.00  val -elbo 125.00  1.2 s"
    assert stdout.getvalue().endswith("\n") and stdout.getvalue().count("\n") == 2


def test_progress_of_a_loop():
    """Outside a terminal: nothing for a short loop, a line per further quarter for a
    long one (never a carriage return); in a terminal a bar and a last line."""
    from vae_tf.progress import Progress

    log = io.StringIO()
    with Progress(100, "IWAE k=10", stream=log) as progress:
        for _ in range(10):
            progress.add(10)
    assert log.getvalue() == ""
    with Progress(100, "IWAE k=10", stream=log, quiet_seconds=0) as progress:
        for _ in range(10):
            progress.add(10)
    lines = log.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"IWAE k=10: {n}/100 images" for n in (30, 50, 80)]
    assert "\r" not in log.getvalue()

    terminal = _Terminal()
    with Progress(100, "IWAE k=10", stream=terminal) as progress:
        for _ in range(10):
            progress.add(10)
    assert terminal.getvalue().startswith("\rIWAE k=10 [") and terminal.getvalue().endswith("\n")
    assert "100/100 images" in terminal.getvalue().split("\r")[-1]
