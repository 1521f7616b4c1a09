"""Shared helpers of the benchmarks: train a configuration on the bundled digits,
score it on a held-out slice, record the machine's load, time things, measure the
matmul peak.

Splits (`load_splits("bundled")`, `split_seed=0`, the TrainConfig defaults): one
permutation of the 5,000 digits; its first 500 are the VALIDATION slice (the 500 digits
every earlier figure was "held out" on, and on which every default and preset was
chosen), its last 500 the TEST slice (never used for any choice), the other 4,000 are
the training split. Stages that make or inform a choice (options, grid) score on
validation; the figures reported as results (the default configuration, `--preset
best`, the peers, the conditional model) are scored on test (and, where recorded, also
on validation, labelled). Evaluation images are binarized once
(`eval_images(x, "dynamic")`, seed `EVAL_BINARIZATION_SEED`), so every configuration is
scored on the same 0/1 digits.

Every result entry records the split it is scored on (`"split"`: "test",
"validation", or None for a speed-only figure), the number of training images
(`"num_train_images"`) and the machine's load averages around it (`"load_before"`,
`"load_after"`: `os.getloadavg()`, 1/5/15 minutes).
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

from vae_tf.config import RunConfig, TrainConfig, VAEConfig, apply_preset  # noqa: F401
from vae_tf.data import load_splits
from vae_tf.evaluation import eval_split, evaluate_likelihood
from vae_tf.networks import count_macs
from vae_tf.training import train

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
# "validation": every stage that makes or informs a choice; "test": reported results only.
SPLITS = ("validation", "test")


# === Machine load ===


def load_average() -> list[float] | None:
    """The machine's 1-, 5- and 15-minute load averages (`os.getloadavg()`), rounded
    to 2 decimals; None where the platform has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def recorded_load():
    """Records the load averages around a block:

        with recorded_load() as load:
            figure = measure()
        entry.update(load)   # {"load_before": [1, 5, 15 min], "load_after": [...]}
    """
    load = {"load_before": load_average()}
    try:
        yield load
    finally:
        load["load_after"] = load_average()


# === Splits ===


def default_run_config() -> RunConfig:
    return RunConfig()


def split_images(split: str, rc: RunConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation images (binarized once) and labels of `split` ("validation" or
    "test") of `rc`'s data with `rc`'s split settings (default: the bundled digits, the
    default split): ([500, 28, 28, 1] float32 0/1, [500] int32) for the defaults."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    images, labels, _ = eval_split(rc or default_run_config(), None, split)
    return images, labels


def split_sizes(rc: RunConfig | None = None) -> dict:
    """{"train": n, "validation": n, "test": n, "split_seed": s} of `rc`'s data."""
    t = (rc or default_run_config()).train
    sizes = load_splits(t.data, validation_fraction=t.validation_fraction, test_fraction=t.test_fraction,
                        split_seed=t.split_seed, data_dir=t.data_dir, manual_dir=t.manual_dir).sizes
    return {**sizes, "split_seed": t.split_seed}


def run_config(preset: str = "default", model: dict | None = None, train_cfg: dict | None = None) -> RunConfig:
    rc = apply_preset(preset)
    return RunConfig(model=rc.model.replace(**(model or {})), train=rc.train.replace(**(train_cfg or {})))


def train_and_score(
    rc: RunConfig, *, splits: tuple[str, ...] = ("validation",), iwae_samples: int = 1000,
    keep_dir: str | None = None,
) -> dict:
    """Trains `rc` on its training split and scores it on each of `splits`.

    The first of `splits` is the entry's `"split"`: its -ELBO and IWAE NLL are the
    entry's top-level figures; `"by_split"` holds the scores of every split. Choices
    (options, grid) pass ("validation",); reported results ("test", "validation").

    Returns a dict with the configs, images/s (median over epochs after the first),
    training seconds, params, the number of training images, the load averages around
    training and scoring, and -ELBO and IWAE NLL (k = `iwae_samples`) in nats.
    """
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    run_dir = keep_dir or tempfile.mkdtemp(prefix="vae-bench-")
    run_dir = os.path.join(run_dir, "run")
    with recorded_load() as load:
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            result = train(rc, run_dir, verbose=0)
        train_seconds = time.perf_counter() - start
        model = result.model
        by_split = {}
        for split in splits if iwae_samples else ():
            x, labels = split_images(split, rc)
            by_split[split] = evaluate_likelihood(model, x, labels if rc.model.conditional else None,
                                                  num_samples=iwae_samples)
    hist = result.history
    return {
        "model": rc.model.to_dict(),
        "train": rc.train.to_dict(),
        "split": splits[0] if by_split else None,
        "num_train_images": len(result.datasets.splits.train_images),
        "params": count_params(model),
        "images_per_second": hist["images_per_second"],
        "train_seconds": train_seconds,
        "epochs": rc.train.epochs,
        "final_train_loss": float(hist["history"]["loss"][-1]),
        "final_val_loss": float(hist["history"].get("val_loss", [float("nan")])[-1]),
        **by_split.get(splits[0], {}),
        "by_split": by_split,
        **load,
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
    """Training FLOPs per (distinct) training image: 2 FLOPs per MAC, forward + backward
    = 3 x forward, times the latent samples per image for the flow and decoder, times the
    copies of each image in its batch (`TrainConfig.augment_copies`)."""
    model = load_run_model(run_dir)
    m = model_macs(model)
    k = model.config.iwae_samples
    with open(os.path.join(run_dir, "config.json")) as f:
        copies = json.load(f).get("train", {}).get("augment_copies", 1)
    return copies * 3 * 2 * (m["encoder"] + k * (m["flow"] + m["decoder"]))


def eval_flops(run_dir: str, num_images: int, iwae_samples: int) -> float:
    """FLOPs of `vae-tf evaluate`: per image one encoder pass, and a flow + decoder pass
    for each of the k importance samples plus the one ELBO sample."""
    model = load_run_model(run_dir)
    m = model_macs(model)
    per_image = 2 * (2 * m["encoder"] + (iwae_samples + 1) * (m["flow"] + m["decoder"]))
    return float(num_images) * per_image


def run_params(run_dir: str) -> int:
    return count_params(load_run_model(run_dir))


def write_peer_data(work: str, split: str = "test") -> tuple[str, str, dict]:
    """The bundled split for the peers: an IDX dir with our training digits (4,000), an
    .npy with `split`'s 500 digits binarized as ours are scored (uint8 0/1), and the
    split sizes."""
    from vae_tf.data import write_idx

    rc = default_run_config()
    splits = load_splits(rc.train.data, validation_fraction=rc.train.validation_fraction,
                         test_fraction=rc.train.test_fraction, split_seed=rc.train.split_seed)
    data_dir = os.path.join(work, "peer-data")
    os.makedirs(data_dir, exist_ok=True)
    train_u8 = np.round(splits.train_images[..., 0] * 255).astype(np.uint8)
    write_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz"), train_u8)
    eval_npy = os.path.join(work, f"peer-{split}.npy")
    np.save(eval_npy, split_images(split, rc)[0][..., 0].astype(np.uint8))
    return data_dir, eval_npy, {**splits.sizes, "split_seed": rc.train.split_seed}
