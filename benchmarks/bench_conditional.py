"""Conditional generation: does a sample drawn for digit d look like a d?

    python benchmarks/bench_conditional.py                 # the figure: 30 epochs, 100 samples per digit, k = 1000
    python benchmarks/bench_conditional.py --quick --out /tmp/cond   # smoke test (2 epochs, 10 per digit, k = 10)

1. An independent judge: a small CNN classifier (tf_keras) trained on the 4,000
   TRAINING digits only (grey levels, `load_splits("bundled")`); its accuracy on the
   TEST slice is reported with it.
2. vae-tf's default conditional model (`VAEConfig.conditional_default()` with
   `TrainConfig.conditional_default()`, 30 epochs: what `vae-tf train --conditional`
   trains: two latent layers 32,16, KL weight 2, one learned mixture prior per class
   over the top layer, four copies of each digit per batch, not moved) and one change at
   a time from it (`MODELS`: model fields, and training fields under "train"), trained
   through `vae_tf.train` on the same 4,000 digits.
3. For each digit d, `model.sample(n, seed=SEED + d, label=d)` (mean images) is
   classified; agreement = share of samples the classifier assigns to d, overall and
   per digit.
4. The conditional NLL -log p(x|y): IWAE with k importance samples
   (`model.log_prob(x, label=y)`, through `vae_tf.evaluation.evaluate_likelihood`) on
   the TEST slice, and on the validation slice (recorded, labelled).

Every measurement records the machine's load averages before and after it
(`os.getloadavg()`, 1/5/15 minutes). Writes OUT/conditional.json and OUT/conditional.md
(OUT defaults to benchmarks/).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
from vae_tf import RunConfig, TrainConfig, VAEConfig, train  # noqa: E402
from vae_tf.data import load_splits  # noqa: E402
from vae_tf.evaluation import evaluate_likelihood  # noqa: E402

# name -> (what a reader runs, VAEConfig changes on top of the default conditional model,
# `VAEConfig.conditional_default()`: two latent layers 32,16 and beta 2). One change at a
# time back to the previous default (one layer of 32, beta 1), and the decoder reading the
# label in every layer, all with the same seed.
MODELS: dict[str, tuple[str, dict]] = {
    "default: two latent layers, beta 2": ("vae-tf train --conditional", {}),
    "one layer, beta 1 (the previous default)": (
        "vae-tf train --conditional --latent-dim 32 --beta 1", {"latent_layers": (), "latent_dim": 32, "beta": 1.0}),
    "one layer, beta 2": ("vae-tf train --conditional --latent-dim 32", {"latent_layers": (), "latent_dim": 32}),
    "two layers, beta 1": ("vae-tf train --conditional --beta 1", {"beta": 1.0}),
    "default, digits moved by up to a pixel": ("vae-tf train --conditional --augment-shift 1",
                                               {"train": {"augment_shift": 1}}),
    "one layer, beta 1, label in every decoder layer": (
        "vae-tf train --conditional --latent-dim 32 --beta 1 --conditioning every_layer",
        {"latent_layers": (), "latent_dim": 32, "beta": 1.0, "conditioning": "every_layer"}),
}
SAMPLE_SEED = 1000


def make_classifier(image_shape, num_classes: int) -> keras.Model:
    """A small CNN: two 3x3 conv + max-pool stages (32, 64), dense 128, dropout, softmax."""
    return keras.Sequential([
        keras.layers.Input(image_shape),
        keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dropout(0.3),
        keras.layers.Dense(num_classes, activation="softmax"),
    ])


def train_classifier(splits, epochs: int, seed: int) -> tuple[keras.Model, dict]:
    """Trains the judge on the training split only; its accuracy on the test slice."""
    keras.utils.set_random_seed(seed)
    clf = make_classifier(splits.image_shape, splits.num_classes)
    clf.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
    with common.recorded_load() as load:
        start = time.perf_counter()
        clf.fit(splits.train_images, splits.train_labels, batch_size=64, epochs=epochs, shuffle=True, verbose=0)
        seconds = time.perf_counter() - start
        pred = np.argmax(clf.predict(splits.test_images, batch_size=500, verbose=0), axis=-1)
    accuracy = float(np.mean(pred == splits.test_labels))
    return clf, {
        "architecture": "conv32-pool-conv64-pool-dense128-dropout0.3-softmax",
        "epochs": epochs,
        "num_train_images": len(splits.train_images),
        "split": "test",
        "test_accuracy": accuracy,
        "num_test_images": len(splits.test_images),
        "train_seconds": seconds,
        "params": int(clf.count_params()),
        **load,
    }


def agreement(model, clf: keras.Model, num_classes: int, per_digit: int) -> dict:
    """Samples `per_digit` mean images for each label and classifies them."""
    with common.recorded_load() as load:
        counts = np.zeros([num_classes, num_classes], np.int64)  # requested x classified
        for d in range(num_classes):
            images = model.sample(per_digit, seed=SAMPLE_SEED + d, label=d).numpy()
            pred = np.argmax(clf.predict(images, batch_size=500, verbose=0), axis=-1)
            counts[d] = np.bincount(pred, minlength=num_classes)
    per = {str(d): float(counts[d, d] / counts[d].sum()) for d in range(num_classes)}
    return {
        "agreement": float(np.trace(counts) / counts.sum()),
        "agreement_per_digit": per,
        "confusion": counts.tolist(),
        "samples_per_digit": per_digit,
        "sample_seed": f"{SAMPLE_SEED} + digit",
        "sampling_load": load,
    }


def run(args) -> dict:
    rc0 = RunConfig(model=VAEConfig.conditional_default(), train=TrainConfig.conditional_default(epochs=args.epochs))
    t = rc0.train
    splits = load_splits(t.data, validation_fraction=t.validation_fraction, test_fraction=t.test_fraction,
                         split_seed=t.split_seed)
    result: dict = {
        "benchmark": "conditional",
        "quick": args.quick,
        "machine": common.machine(),
        "splits": {**splits.sizes, "split_seed": t.split_seed},
        "iwae_samples": args.iwae_samples,
    }
    with common.recorded_load() as total_load:
        clf, result["classifier"] = train_classifier(splits, args.classifier_epochs, args.seed)
        print(f"[classifier] test accuracy {result['classifier']['test_accuracy']:.1%} "
              f"({result['classifier']['train_seconds']:.0f} s)", flush=True)
        models = {}
        work = args.work or tempfile.mkdtemp(prefix="vae-bench-conditional-")
        for i, (name, (command, change)) in enumerate(MODELS.items()):
            change = dict(change)
            train_change = change.pop("train", {})
            if args.models and name not in args.models:
                continue
            rc = RunConfig(model=rc0.model.replace(**change), train=rc0.train.replace(**train_change))
            with common.recorded_load() as load:
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    trained = train(rc, os.path.join(work, f"run-{i}"), verbose=0)
                seconds = time.perf_counter() - start
            model = trained.model
            entry = {
                "command": command + (f" --epochs {args.epochs}" if args.epochs != TrainConfig().epochs else ""),
                "model": rc.model.to_dict(),
                "train": rc.train.to_dict(),
                "num_train_images": len(trained.datasets.splits.train_images),
                "train_seconds": seconds,
                "train_load": load,
                **agreement(model, clf, splits.num_classes, args.samples),
                "split": "test",
            }
            with common.recorded_load() as load:
                x, _ = common.split_images("test", rc)
                entry["test_marginal"] = {**marginal_nll(model, x, splits.num_classes, args.iwae_samples), **load}
            for split in ("test", "validation"):
                x, y = common.split_images(split, rc)
                with common.recorded_load() as load:
                    scores = evaluate_likelihood(model, x, y, num_samples=args.iwae_samples)
                entry[split] = {**scores, **load}
            models[name] = entry
            print(f"[{name}] agreement {entry['agreement']:.1%}, test -log p(x|y) {entry['test']['iwae_nll']:.2f} "
                  f"± {entry['test']['iwae_nll_stderr']:.2f} nats (validation {entry['validation']['iwae_nll']:.2f}), "
                  f"{seconds:.0f} s training", flush=True)
        result["models"] = models
    result.update(total_load)
    return result


def marginal_nll(model, x, num_classes: int, iwae_samples: int) -> dict:
    """-log p(x) of a conditional model, the label summed out under a uniform p(y):
    log p(x) = logsumexp_y log p(x|y) - log K, each log p(x|y) an IWAE estimate with
    k = iwae_samples / K (the cost of one k = iwae_samples estimate), so a stochastic
    lower bound like the others. Nats per image, mean and standard error over x."""
    k = max(1, iwae_samples // num_classes)
    per_label = np.stack([
        np.concatenate([model.log_prob(x[i:i + 100], label=np.full(len(x[i:i + 100]), y, np.int32),
                                       num_samples=k, seed=y).numpy() for i in range(0, len(x), 100)])
        for y in range(num_classes)
    ])  # [K, N]
    log_px = np.logaddexp.reduce(per_label.astype(np.float64), axis=0) - np.log(num_classes)
    return {"nll": float(-log_px.mean()), "nll_stderr": float(log_px.std(ddof=1) / np.sqrt(len(log_px))),
            "samples_per_label": k, "num_images": int(len(x))}


def _load(entry: dict) -> str:
    fmt = lambda v: "not recorded" if not v else "/".join(f"{x:.2f}" for x in v)  # noqa: E731
    return f"{fmt(entry.get('load_before'))} -> {fmt(entry.get('load_after'))}"


def write_markdown(result: dict, path: str) -> None:
    m, c, s = result["machine"], result["classifier"], result["splits"]
    lines = [
        "# Conditional generation (benchmarks/bench_conditional.py)",
        "",
        *(["**Smoke test (`--quick`): not a result.**", ""] if result.get("quick") else []),
        f"{m.get('date', '')}, {m.get('cpu', '')}, {m.get('cores', '')} cores, TensorFlow {m.get('tensorflow', '')}, "
        f"commit {m.get('commit', '')}. Machine load averages (1/5/15 min) before -> after the whole run: "
        f"{_load(result)}.",
        "",
        f"Data: the bundled digits, {s['train']:,} for training (classifier and models), validation slice "
        f"{s['validation']}, test slice {s['test']} (`split_seed={s['split_seed']}`).",
        "",
        f"Judge: a CNN ({c['architecture']}, {c['params']:,} params, {c['epochs']} epoch{'s' * (c['epochs'] != 1)}) trained on the "
        f"{c['num_train_images']:,} training digits only: **{c['test_accuracy']:.1%}** accuracy on the "
        f"{c['num_test_images']} test digits (load {_load(c)}).",
        "",
        f"Agreement: share of `model.sample(n, seed, label=d)` mean images the judge assigns to d; "
        f"-log p(x|y): IWAE with k = {result['iwae_samples']} on the test and validation slices, nats; "
        f"-log p(x): the label summed out (uniform p(y)), k = {result['iwae_samples']} / classes per label, test slice.",
        "",
        "| model (command) | train images | agreement | test -log p(x\\|y) | ± se | test -log p(x) | test -ELBO | "
        "validation -log p(x\\|y) | train s | load during training (1/5/15 min) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, e in result["models"].items():
        lines.append(
            f"| {name} (`{e['command']}`) | {e['num_train_images']:,} | **{e['agreement']:.1%}** | "
            f"{e['test']['iwae_nll']:.2f} | {e['test']['iwae_nll_stderr']:.2f} | "
            f"{e['test_marginal']['nll']:.2f} | {e['test']['neg_elbo']:.2f} | "
            f"{e['validation']['iwae_nll']:.2f} | {e['train_seconds']:.0f} | {_load(e['train_load'])} |")
    digits = list(next(iter(result["models"].values()))["agreement_per_digit"])
    lines += [
        "",
        f"Agreement per requested digit ({next(iter(result['models'].values()))['samples_per_digit']} samples each):",
        "",
        "| model | " + " | ".join(digits) + " |",
        "|---|" + "---:|" * len(digits),
    ]
    for name, e in result["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{e['agreement_per_digit'][d]:.0%}" for d in digits) + " |")
    lines += [
        "",
        "Reproduce: `python benchmarks/bench_conditional.py` (or the `conditional` stage of "
        "`python benchmarks/run_all.py`).",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=None, help="training epochs of each VAE (default: TrainConfig's, 30)")
    p.add_argument("--samples", type=int, default=None, help="samples per digit (default 100)")
    p.add_argument("--iwae-samples", type=int, default=None, help="k of the IWAE NLL (default 1000)")
    p.add_argument("--classifier-epochs", type=int, default=None, help="epochs of the judge (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the judge's training")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 2 epochs, 10 samples per digit, k = 10, 1 classifier epoch (not a result)")
    p.add_argument("--out", default=HERE, help="directory of conditional.json and conditional.md (default benchmarks/)")
    p.add_argument("--work", default=None, help="directory of the training runs (default: a new temporary one)")
    p.add_argument("--models", default="",
                   help="';'-separated names of MODELS to run (default: all); the others are left out of the results")
    args = p.parse_args(argv)
    args.models = [n.strip() for n in args.models.split(";") if n.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        p.error(f"unknown model(s) {'; '.join(unknown)}; models: {'; '.join(MODELS)}")
    quick = {"epochs": 2, "samples": 10, "iwae_samples": 10, "classifier_epochs": 1}
    full = {"epochs": TrainConfig().epochs, "samples": 100, "iwae_samples": 1000, "classifier_epochs": 8}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    result = run(args)
    os.makedirs(args.out, exist_ok=True)
    common.dump(os.path.join(args.out, "conditional.json"), result)
    write_markdown(result, os.path.join(args.out, "conditional.md"))
    print(json.dumps({name: {"agreement": e["agreement"], "test_nll": e["test"]["iwae_nll"]}
                      for name, e in result["models"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
