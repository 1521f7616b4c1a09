"""Shared helpers of the benchmarks: train a configuration on the bundled digits,
score it on the held-out slice, time things, measure the matmul peak.

The held-out slice is the one `load_splits("bundled")` holds out (500 of the 5,000
digits, `split_seed=0`); training uses the other 4,500. Held-out images are binarized
once (`eval_images(x, "dynamic")`), so every configuration is scored on the same 0/1
digits.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import platform
import resource
import subprocess
import tempfile
import time

import numpy as np
import tensorflow as tf

from vae_tf.config import RunConfig, TrainConfig, VAEConfig, apply_preset
from vae_tf.data import EVAL_BINARIZATION_SEED, eval_images, load_splits
from vae_tf.evaluation import evaluate_likelihood
from vae_tf.networks import count_macs
from vae_tf.training import train

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def held_out_images() -> np.ndarray:
    """The 500 held-out bundled digits, binarized once: [500, 28, 28, 1] float32 0/1."""
    splits = load_splits("bundled")
    return eval_images(splits.test_images, "dynamic", EVAL_BINARIZATION_SEED)


def run_config(preset: str = "default", model: dict | None = None, train_cfg: dict | None = None) -> RunConfig:
    rc = apply_preset(preset)
    return RunConfig(model=rc.model.replace(**(model or {})), train=rc.train.replace(**(train_cfg or {})))


def train_and_score(
    rc: RunConfig, *, iwae_samples: int = 1000, eval_images_: np.ndarray | None = None, keep_dir: str | None = None
) -> dict:
    """Trains `rc` on the bundled train split and scores it on the held-out slice.

    Returns a dict with the configs, images/s (median over epochs after the first),
    training seconds, params, test -ELBO and IWAE NLL (k = `iwae_samples`) in nats.
    """
    run_dir = keep_dir or tempfile.mkdtemp(prefix="vae-bench-")
    run_dir = os.path.join(run_dir, "run")
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        result = train(rc, run_dir, verbose=0)
    train_seconds = time.perf_counter() - start
    model = result.model
    x = held_out_images() if eval_images_ is None else eval_images_
    labels = load_splits("bundled").test_labels if rc.model.conditional else None
    scores = evaluate_likelihood(model, x, labels, num_samples=iwae_samples) if iwae_samples else {}
    hist = result.history
    return {
        "model": rc.model.to_dict(),
        "train": rc.train.to_dict(),
        "params": count_params(model),
        "images_per_second": hist["images_per_second"],
        "train_seconds": train_seconds,
        "epochs": rc.train.epochs,
        "final_train_loss": float(hist["history"]["loss"][-1]),
        "final_val_loss": float(hist["history"].get("val_loss", [float("nan")])[-1]),
        **{k: v for k, v in scores.items()},
    }


def count_params(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def matmul_peak_flops(n: int = 4096, repeats: int = 5) -> float:
    """fp32 matmul FLOP/s of TensorFlow on this machine: best of `repeats` n x n x n."""
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    tf.linalg.matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best


def machine() -> dict:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    commit = ""
    with contextlib.suppress(Exception):
        commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True).strip()
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "tensorflow": tf.__version__,
        "commit": commit,
    }


def peak_rss_bytes_children() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def dump(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False, default=float)
        f.write("\n")


def load_run_model(run_dir: str):
    from vae_tf.training import load

    return load(run_dir)


def model_macs(model) -> dict:
    """Multiply-accumulates per image: encoder (body + posterior params + flow) and
    decoder (body), from the layer shapes."""
    enc = count_macs(model.encoder_body)
    kernel = model.posterior_params.kernel
    enc += int(kernel.shape[0]) * int(kernel.shape[1])
    flow = 0
    if model.flow is not None:
        for w in model.flow.trainable_weights:
            if len(w.shape) == 2:  # MADE kernels (masked, counted dense)
                flow += int(w.shape[0]) * int(w.shape[1])
    return {"encoder": enc, "flow": flow, "decoder": count_macs(model.decoder_body)}


def train_flops_per_image(run_dir: str) -> float:
    """Training FLOPs per image: 2 FLOPs per MAC, forward + backward = 3 x forward,
    times the latent samples per image for the flow and decoder."""
    model = load_run_model(run_dir)
    m = model_macs(model)
    k = model.config.iwae_samples
    return 3 * 2 * (m["encoder"] + k * (m["flow"] + m["decoder"]))


def eval_flops(run_dir: str, num_images: int, iwae_samples: int) -> float:
    """FLOPs of `vae-tf evaluate`: per image one encoder pass, and a flow + decoder pass
    for each of the k importance samples plus the one ELBO sample."""
    model = load_run_model(run_dir)
    m = model_macs(model)
    per_image = 2 * (2 * m["encoder"] + (iwae_samples + 1) * (m["flow"] + m["decoder"]))
    return float(num_images) * per_image


def run_params(run_dir: str) -> int:
    return count_params(load_run_model(run_dir))


def write_peer_data(work: str) -> tuple[str, str]:
    """The bundled split for the peers: an IDX dir with the 4,500 training digits and
    an .npy with the 500 held-out digits binarized as ours are scored (uint8 0/1)."""
    from vae_tf.data import write_idx

    splits = load_splits("bundled")
    data_dir = os.path.join(work, "peer-data")
    os.makedirs(data_dir, exist_ok=True)
    train_u8 = np.round(splits.train_images[..., 0] * 255).astype(np.uint8)
    write_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz"), train_u8)
    test_npy = os.path.join(work, "peer-held-out.npy")
    np.save(test_npy, held_out_images()[..., 0].astype(np.uint8))
    return data_dir, test_npy
