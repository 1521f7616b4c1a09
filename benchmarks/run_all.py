"""The whole benchmark of issue 6 (and issue 2 section 7, issue 4) in one command:

    python benchmarks/run_all.py --out /tmp/vae-bench            # everything
    python benchmarks/run_all.py --out /tmp/vae-bench --skip best,options   # the quick part

Data: the bundled 5,000 digits split three ways (`load_splits("bundled")`,
`split_seed=0`): 4,000 for training, a VALIDATION slice of 500 (the digits every
earlier figure was "held out" on, and on which every default and preset was chosen)
and a TEST slice of 500 (never used for a choice). Stages that make or inform a
choice score on validation; reported results on test (and also on validation,
labelled). Every entry records its split, its number of training images and the
load averages around it; results["stage_load"] those around each stage.

Stages (each can be skipped with --skip NAME[,NAME]):

  peak      fp32 matmul FLOP/s of TensorFlow (4096^3, best of 5), at the start and the end.
  train     `vae-tf train` for the default configuration and the `mlp` and `conv-small`
            presets (30 epochs, batch 128, the 4,000 training digits): images/s (median
            over epochs after the first), training FLOP/s as a share of the matmul peak,
            peak resident memory of the process.
  evaluate  `vae-tf evaluate` (IWAE k = 1000) of the default run on the TEST slice (the
            reported figure: NLL, -ELBO, FLOP/s from layer shapes as a share of the
            peak, peak resident memory), then on the validation slice (recorded too).
  peers     ../shared/peers re-implementations trained in the same run on the same
            4,000 digits and scored on the same TEST slice (skipped with a message when
            the peers or the torch venv are missing).
  pairs     speed ratios of two presets against their peers, back to back (speed only).
  best      the `best` preset (no epoch limit), trained the same way, scored on TEST
            (and validation).
  options   issue 4: each option combination trained with the default budget, IWAE NLL
            (k = 1000) on the VALIDATION slice (base: the plain ELBO with N(0, I)).
  grid      issue 6: one change at a time on top of the default configuration (what
            each choice buys in nats), scored on the VALIDATION slice.
  export    decoder latency and sizes through the export package's benchmark
            (benchmarks/bench_export.py), when present.
  conditional  benchmarks/bench_conditional.py: samples of the default conditional
            model (and `--prior normal`) classified by an independent CNN trained on the
            4,000 training digits; agreement with the requested digit and -log p(x|y) on
            the TEST slice.

Writes OUT/results.json and OUT/results.md; `--commit-results` also copies them to
benchmarks/results.json and benchmarks/results.md (and the conditional stage's
conditional.json / .md to benchmarks/).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
import report  # noqa: E402

PEERS_DIR = os.path.normpath(os.path.join(common.REPO, "..", "shared", "peers"))
TORCH_PYTHON = os.environ.get(
    "VAE_BENCH_TORCH_PYTHON", os.path.expanduser("~/.cache/vae-tf-torch-venv/bin/python")
)
TF_PEERS = ("keras_io", "keras_io_l16", "tf_cvae", "tfp_layers")
STAGES = ("peak", "train", "evaluate", "peers", "pairs", "best", "options", "grid", "export", "conditional")

# Issue 4: each option alone on the plain model (ELBO, no warm-up: OPTIONS_BASE), and
# the combinations; the same budget as the default (30 epochs, batch 128). Scored on the
# validation slice: these figures informed the defaults.
# Measured with batch 128 (the default then), which the rows keep.
OPTIONS_BASE = {"iwae_samples": 1, "kl_warmup_steps": 0, "prior": "normal", "iwae_gradient": "reparam"}
OPTIONS_TRAIN = {"batch_size": 128}
OPTIONS: dict[str, dict] = {
    "plain ELBO (base)": {},
    "posterior=full": {"posterior": "full"},
    "posterior=iaf": {"posterior": "iaf"},
    "prior=mog": {"prior": "mog"},
    "prior=vamp": {"prior": "vamp"},
    "iwae k=5": {"iwae_samples": 5},
    "kl warm-up 300 steps": {"kl_warmup_steps": 300},
    "free bits 8 nats": {"free_bits": 8.0},
    "conditional": {"conditional": True},
    "iaf + mog": {"posterior": "iaf", "prior": "mog"},
    "iaf + vamp + iwae k=5": {"posterior": "iaf", "prior": "vamp", "iwae_samples": 5},
    "default: iwae k=5 + warm-up 300": {"iwae_samples": 5, "kl_warmup_steps": 300},
}

# name -> (VAEConfig changes, TrainConfig changes) on top of the default configuration.
# Scored on the validation slice: these figures informed the defaults.
# The rows measured before the default took 4 copies and the one-pixel shift keep the
# training they were measured with (each image once per pass, unmoved, unless the row
# says otherwise), so that rerunning a row reproduces its figure.
BEFORE_COPIES = {"augment_copies": 1, "augment_shift": 0}
_GRID_BEFORE_B64: dict[str, tuple[dict, dict]] = {
    "default (base)": ({}, BEFORE_COPIES),
    "default, seed 1 (noise check)": ({}, {**BEFORE_COPIES, "seed": 1}),
    "prior=normal (the previous default)": ({"prior": "normal"}, BEFORE_COPIES),
    "prior=normal, seed 1": ({"prior": "normal"}, {**BEFORE_COPIES, "seed": 1}),
    "prior=mog with 32 components": ({"prior_components": 32}, BEFORE_COPIES),
    "posterior=iaf": ({"posterior": "iaf"}, BEFORE_COPIES),
    "encoder dropout 0.1": ({"dropout": 0.1}, BEFORE_COPIES),
    "weight decay 0.05 (AdamW)": ({}, {**BEFORE_COPIES, "weight_decay": 0.05}),
    "hidden 512-256": ({"hidden_units": (512, 256)}, BEFORE_COPIES),
    "latent hierarchy 32,16 (--latent-layers)": ({"latent_layers": (32, 16)}, BEFORE_COPIES),
    "latent hierarchy 32,16, seed 1": ({"latent_layers": (32, 16)}, {**BEFORE_COPIES, "seed": 1}),
    "batch 64 (twice the steps)": ({}, {**BEFORE_COPIES, "batch_size": 64}),
    "iwae k=20": ({"iwae_samples": 20}, BEFORE_COPIES),
    "prior=vamp with 16 pseudo-inputs": ({"prior": "vamp", "prior_components": 16}, BEFORE_COPIES),
    "prior=vamp with 100 pseudo-inputs": ({"prior": "vamp", "prior_components": 100}, BEFORE_COPIES),
    "augment shift 1 px (--augment-shift 1)": ({}, {**BEFORE_COPIES, "augment_shift": 1}),
    "augment shift 1 px, seed 1": ({}, {**BEFORE_COPIES, "augment_shift": 1, "seed": 1}),
    "augment shift 2 px": ({}, {**BEFORE_COPIES, "augment_shift": 2}),
    "--preset best (512-256, 100 epochs)": ({"hidden_units": (512, 256)}, {**BEFORE_COPIES, "epochs": 100}),
    "--preset best, augment shift 1 px": ({"hidden_units": (512, 256)}, {**BEFORE_COPIES, "epochs": 100, "augment_shift": 1}),
    "--preset best, augment shift 1 px, 200 epochs": ({"hidden_units": (512, 256)}, {**BEFORE_COPIES, "epochs": 200, "augment_shift": 1}),
    "--preset best, augment shift 1 px, 300 epochs": ({"hidden_units": (512, 256)}, {**BEFORE_COPIES, "epochs": 300, "augment_shift": 1}),
    "batch 32, augment shift 1 px (4x the steps)": ({}, {**BEFORE_COPIES, "batch_size": 32, "augment_shift": 1}),
    "batch 32, augment shift 1 px, learning rate 2e-3": ({}, {**BEFORE_COPIES, "batch_size": 32, "augment_shift": 1, "learning_rate": 2e-3}),
    # One change at a time on today's default (4 copies, the one-pixel shift), and back.
    "4 copies, shift 1 px (the default)": ({}, {}),
    "4 copies, shift 1 px, seed 1": ({}, {"seed": 1}),
    "1 copy, no shift (the default before), fused Adam": ({}, BEFORE_COPIES),
    "1 copy, no shift, fused Adam, seed 1": ({}, {**BEFORE_COPIES, "seed": 1}),
    "2 copies, shift 1 px": ({}, {"augment_copies": 2}),
    "4 copies, no shift": ({}, {"augment_shift": 0}),
    "4 copies, shift 1 px, iwae k=5": ({"iwae_samples": 5}, {}),
}
# The rows above were measured with batch 128 and the plain IWAE gradient, the defaults
# then; they keep them, so that rerunning a row reproduces its figure.
# The model and training of those rows, where a row does not say otherwise.
BEFORE_B64 = ({"iwae_gradient": "reparam", "iwae_samples": 10, "prior_components": 16},
              {"batch_size": 128, "augment_copies": 4})


def _on_b128(model: dict | None = None, train: dict | None = None) -> tuple[dict, dict]:
    """A row: the changes on top of the default of before batch 64 (BEFORE_B64)."""
    return {**BEFORE_B64[0], **(model or {})}, {**BEFORE_B64[1], **(train or {})}


GRID: dict[str, tuple[dict, dict]] = {name: _on_b128(model, train) for name, (model, train) in _GRID_BEFORE_B64.items()}

DREG = {"iwae_gradient": "dreg"}
GRID.update({
    # From the default of the morning of 2026-12-07 (batch 128, 4 copies, IWAE k = 10 with
    # the plain gradient, 16 prior components) to today's, one change at a time.
    "batch 128, plain gradient (the default before)": _on_b128(),
    "batch 128, plain gradient, seed 1": _on_b128(train={"seed": 1}),
    "batch 64": _on_b128(train={"batch_size": 64}),
    "batch 64, seed 1": _on_b128(train={"batch_size": 64, "seed": 1}),
    "batch 32": _on_b128(train={"batch_size": 32}),
    "batch 64, DReG": _on_b128(DREG, {"batch_size": 64}),
    "batch 64, DReG, seed 1": _on_b128(DREG, {"batch_size": 64, "seed": 1}),
    "batch 64, DReG, k=5, 6 copies": _on_b128({**DREG, "iwae_samples": 5}, {"batch_size": 64, "augment_copies": 6}),
    "batch 64, DReG, k=5, 8 copies": _on_b128({**DREG, "iwae_samples": 5}, {"batch_size": 64, "augment_copies": 8}),
    "batch 64, DReG, 64 prior components": _on_b128({**DREG, "prior_components": 64}, {"batch_size": 64}),
    "batch 64, DReG, k=5, 6 copies, 64 prior components (the default)": ({}, {}),
    "the default, seed 1": ({}, {"seed": 1}),
    # ... and what else was tried on the way (none kept).
    "batch 64, KL warm-up 300 steps": _on_b128({"kl_warmup_steps": 300}, {"batch_size": 64}),
    "batch 64, KL warm-up 1200 steps": _on_b128({"kl_warmup_steps": 1200}, {"batch_size": 64}),
    "batch 64, DReG, learning rate 1e-2": _on_b128(DREG, {"batch_size": 64, "learning_rate": 1e-2}),
    "batch 64, DReG, learning rate 3e-3": _on_b128(DREG, {"batch_size": 64, "learning_rate": 3e-3}),
    "batch 64, DReG, latent 64": _on_b128({**DREG, "latent_dim": 64}, {"batch_size": 64}),
    "batch 64, DReG, k=5 (4 copies)": _on_b128({**DREG, "iwae_samples": 5}, {"batch_size": 64}),
    "batch 64, DReG, k=5, 8 copies, seed 1": _on_b128({**DREG, "iwae_samples": 5},
                                                      {"batch_size": 64, "augment_copies": 8, "seed": 1}),
    "batch 64, DReG, k=5, 8 copies, 64 prior components": _on_b128(
        {**DREG, "iwae_samples": 5, "prior_components": 64}, {"batch_size": 64, "augment_copies": 8}),
})


def vae_tf_cli() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "vae-tf")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "vae_tf.cli"]


def run_measured(cmd: list[str], log_path: str, env: dict | None = None, timeout: float | None = None) -> dict:
    """Runs `cmd` to completion; returns its exit code, wall seconds and peak RSS (bytes)."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = None if timeout is None else start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "cmd": " ".join(cmd),
        "returncode": proc.returncode,
        "wall_seconds": time.perf_counter() - start,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "log": log_path,
    }


def tail(path: str, n: int = 20) -> str:
    with open(path) as f:
        return "".join(f.readlines()[-n:])


def last_json_line(path: str) -> dict:
    with open(path) as f:
        for line in reversed(f.read().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
    raise RuntimeError(f"no JSON result in {path}:\n{tail(path)}")


def stage_train(work: str, presets=("default", "mlp", "conv-small"), speed_epochs: int | None = None) -> dict:
    """`vae-tf train` per preset; presets other than "default" run `speed_epochs` epochs
    when given (their figure is speed only)."""
    results = {}
    num_train = common.split_sizes()["train"]
    for name in presets:
        # "PRESET+nojit" runs the preset without XLA (for comparing the two).
        preset, _, variant = name.partition("+")
        extra = ["--no-jit"] if variant == "nojit" else []
        if speed_epochs and name != "default":
            extra += ["--epochs", str(speed_epochs)]
        run_dir = os.path.join(work, f"run-{name}")
        with common.recorded_load() as load:
            r = run_measured(
                vae_tf_cli() + ["train", "--data", "bundled", "--preset", preset, "--out", run_dir, "--no-pictures"]
                + extra,
                os.path.join(work, f"train-{name}.log"),
            )
        if r["returncode"]:
            raise RuntimeError(f"vae-tf train --preset {name} failed:\n{tail(r['log'])}")
        with open(os.path.join(run_dir, "history.json")) as f:
            history = json.load(f)
        flops = common.train_flops_per_image(run_dir)
        results[name] = {
            **r,
            "run_dir": run_dir,
            "split": None,  # speed only; the default's likelihoods are the evaluate stage's
            "num_train_images": num_train,
            **load,
            "images_per_second": history["images_per_second"],
            "epochs": len(history["history"]["epoch"]),
            "train_flops_per_image": flops,
            "train_flops_per_second": flops * history["images_per_second"],
            "params": common.run_params(run_dir),
        }
        print(f"[train] {name}: {history['images_per_second']:.0f} images/s, "
              f"{r['wall_seconds']:.0f} s, peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
    return results


def stage_evaluate(work: str, run_dir: str, name: str = "default", iwae_samples: int = 1000) -> dict:
    """`vae-tf evaluate` of `run_dir` on the TEST slice (the reported figures and the
    timing), then on the validation slice (recorded in "by_split", not timed)."""
    by_split, timed = {}, None
    for split in ("test", "validation"):
        with common.recorded_load() as load:
            r = run_measured(
                vae_tf_cli() + ["evaluate", run_dir, "--split", split, "--iwae-samples", str(iwae_samples), "--json"],
                os.path.join(work, f"evaluate-{name}-{split}.log"),
            )
        if r["returncode"]:
            raise RuntimeError(f"vae-tf evaluate --split {split} failed:\n{tail(r['log'])}")
        result = last_json_line(r["log"])
        by_split[split] = {**result, **load}
        if timed is None:
            timed = {**r, **result, **load}
    flops = common.eval_flops(run_dir, timed["num_images"], iwae_samples)
    out = {**timed, "split": "test", "num_train_images": common.split_sizes()["train"], "flops": flops,
           "flops_per_second": flops / timed["seconds"], "by_split": by_split}
    print(f"[evaluate] {name}: test IWAE NLL {out['iwae_nll']:.2f} ± {out['iwae_nll_stderr']:.2f} nats "
          f"(validation {by_split['validation']['iwae_nll']:.2f}) in {out['seconds']:.1f} s, "
          f"peak RSS {out['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
    return out


def stage_peers(work: str, epochs: int, quality: bool = True) -> dict:
    """Peers trained for `epochs` on our 4,000 training digits; with `quality`, also
    scored on our TEST slice (their own IWAE code, k = 1000), as the default is."""
    if not os.path.isdir(PEERS_DIR):
        print(f"[peers] skipped: {PEERS_DIR} not found", flush=True)
        return {"skipped": f"{PEERS_DIR} not found"}
    data_dir, test_npy, sizes = common.write_peer_data(work, "test")
    out_dir = os.path.join(work, "peers")
    results = {}
    jobs = [(name, [sys.executable, os.path.join(PEERS_DIR, "peers_tf.py"), name]) for name in TF_PEERS]
    if os.path.exists(TORCH_PYTHON):
        jobs.insert(0, ("pytorch_examples", [TORCH_PYTHON, os.path.join(PEERS_DIR, "peers_torch.py")]))
    else:
        msg = (f"skipped: no torch venv at {TORCH_PYTHON} (create it with `python -m venv` and "
               "`pip install torch==2.13.0 numpy`, or set VAE_BENCH_TORCH_PYTHON)")
        print(f"[peers] pytorch_examples {msg}", flush=True)
        results["pytorch_examples"] = {"skipped": msg}
    for name, cmd in jobs:
        cmd = cmd + ["--epochs", str(epochs), "--train-idx", data_dir, "--out", out_dir]
        if quality:
            cmd += ["--test-npy", test_npy]
        with common.recorded_load() as load:
            r = run_measured(cmd, os.path.join(work, f"peer-{name}.log"))
        r.update(load, split="test" if quality else None, num_train_images=sizes["train"])
        if r["returncode"]:
            print(f"[peers] {name} failed:\n{tail(r['log'])}", flush=True)
            results[name] = {**r, "failed": True}
            continue
        res = last_json_line(r["log"])
        results[name] = {**r, **res}
        print(f"[peers] {name}: {res['images_per_s']:.0f} images/s, IWAE NLL "
              f"{res.get('iwae_nll_k1000_n1000', float('nan')):.2f}", flush=True)
    return results


PAIRS = (("mlp", "pytorch_examples", 1.2), ("conv-small", "keras_io_l16", 1.3))


def stage_pairs(work: str, rounds: int, epochs: int) -> dict:
    """Speed ratios on a noisy machine: each of our presets and its peer are trained
    back to back, `rounds` times, `epochs` epochs each (images/s: median over the
    epochs after the first); the ratio of each round, and their median."""
    if not os.path.isdir(PEERS_DIR):
        print(f"[pairs] skipped: {PEERS_DIR} not found", flush=True)
        return {"skipped": f"{PEERS_DIR} not found"}
    data_dir, _, sizes = common.write_peer_data(work)
    results = {}
    for preset, peer, goal in PAIRS:
        if peer == "pytorch_examples":
            if not os.path.exists(TORCH_PYTHON):
                print(f"[pairs] {preset} vs {peer} skipped: no torch venv at {TORCH_PYTHON}", flush=True)
                results[preset] = {"skipped": f"no torch venv at {TORCH_PYTHON}"}
                continue
            peer_cmd = [TORCH_PYTHON, os.path.join(PEERS_DIR, "peers_torch.py")]
        else:
            peer_cmd = [sys.executable, os.path.join(PEERS_DIR, "peers_tf.py"), peer]
        ours, theirs, loads = [], [], []
        for i in range(rounds):
            with common.recorded_load() as load:
                a, b = _pair_round(preset, peer, peer_cmd, epochs, data_dir, work, i)
            ours.append(a)
            theirs.append(b)
            loads.append(load)
            print(f"[pairs] round {i}: {preset} {ours[-1]:.0f} vs {peer} {theirs[-1]:.0f} images/s "
                  f"(x{ours[-1] / theirs[-1]:.2f}; load {load['load_before']} -> {load['load_after']})", flush=True)
        ratios = sorted(a / b for a, b in zip(ours, theirs))
        results[preset] = {"peer": peer, "goal": goal, "ours_images_per_second": ours,
                           "peer_images_per_second": theirs, "ratios": ratios,
                           "median_ratio": statistics.median(ratios), "epochs": epochs,
                           "split": None, "num_train_images": sizes["train"], "round_loads": loads}
    return results


def _pair_round(preset: str, peer: str, peer_cmd: list[str], epochs: int, data_dir: str, work: str,
                i: int) -> tuple[float, float]:
    """One back-to-back round: our preset, then the peer; (ours, theirs) images/s."""
    run_dir = os.path.join(work, f"pair-{preset}-{i}")
    r = run_measured(vae_tf_cli() + ["train", "--data", "bundled", "--preset", preset, "--epochs",
                                    str(epochs), "--out", run_dir, "--no-pictures"],
                     os.path.join(work, f"pair-{preset}-{i}.log"))
    if r["returncode"]:
        raise RuntimeError(f"vae-tf train --preset {preset} failed:\n{tail(r['log'])}")
    with open(os.path.join(run_dir, "history.json")) as f:
        ours = json.load(f)["images_per_second"]
    out_dir = os.path.join(work, f"pair-peers-{i}")
    r = run_measured(peer_cmd + ["--epochs", str(epochs), "--train-idx", data_dir, "--out", out_dir],
                     os.path.join(work, f"pair-{peer}-{i}.log"))
    if r["returncode"]:
        raise RuntimeError(f"peer {peer} failed:\n{tail(r['log'])}")
    return ours, last_json_line(r["log"])["images_per_s"]


def _add_pair_rounds(pairs: dict, earlier: dict) -> list[str]:
    """Puts an earlier run's back-to-back rounds in front of this run's (same preset,
    peer and number of training images) and recomputes the ratios and their median;
    returns the presets extended. Rounds recorded without load averages get None."""
    added = []
    for preset, old in earlier.items():
        new = pairs.get(preset)
        if not (isinstance(new, dict) and "ratios" in new and "ratios" in old and old["peer"] == new["peer"]
                and old.get("num_train_images") == new.get("num_train_images")):
            continue
        if "round_loads" in old or "round_loads" in new:
            new["round_loads"] = [
                *(old.get("round_loads") or [None] * len(old["ours_images_per_second"])),
                *(new.get("round_loads") or [None] * len(new["ours_images_per_second"])),
            ]
        for key in ("ours_images_per_second", "peer_images_per_second"):
            new[key] = old[key] + new[key]
        new["ratios"] = sorted(a / b for a, b in zip(new["ours_images_per_second"], new["peer_images_per_second"]))
        new["median_ratio"] = statistics.median(new["ratios"])
        added.append(preset)
    return added


def stage_best(work: str) -> dict:
    """`--preset best`, a reported result: scored on the TEST slice (and validation)."""
    rc = common.run_config("best")
    r = common.train_and_score(rc, splits=("test", "validation"), keep_dir=os.path.join(work, "best"))
    print(f"[best] test IWAE NLL {r['iwae_nll']:.2f} ± {r['iwae_nll_stderr']:.2f} nats "
          f"(validation {r['by_split']['validation']['iwae_nll']:.2f}), {r['train_seconds']:.0f} s training",
          flush=True)
    return r


def _train_and_score_each(work: str, stage: str, runs: dict) -> dict:
    """Trains and scores each `name -> (RunConfig, change)` of `runs` on the VALIDATION
    slice (these stages inform choices); a failing run is recorded and does not lose
    the others."""
    results = {}
    for name, (rc, change) in runs.items():
        try:
            r = common.train_and_score(rc, splits=("validation",),
                                       keep_dir=tempfile.mkdtemp(dir=work, prefix=f"{stage}-"))
        except Exception as err:  # noqa: BLE001 - reported per run
            print(f"[{stage}] {name} failed: {err!r}", flush=True)
            results[name] = {"change": change, "failed": repr(err)}
            continue
        r["change"] = change
        results[name] = r
        print(f"[{stage}] {name}: validation IWAE NLL {r['iwae_nll']:.2f} ± {r['iwae_nll_stderr']:.2f}, "
              f"-ELBO {r['neg_elbo']:.2f}, {r['images_per_second']:.0f} images/s, "
              f"{r['train_seconds']:.0f} s training", flush=True)
    return results


def stage_grid(work: str, names: list[str] | None = None) -> dict:
    runs = {
        name: (common.run_config("default", model=model, train_cfg=train), {"model": model, "train": train})
        for name, (model, train) in GRID.items() if not names or name in names
    }
    return _train_and_score_each(work, "grid", runs)


def stage_options(work: str, names: list[str] | None = None) -> dict:
    runs = {
        name: (common.run_config("default", model={**OPTIONS_BASE, **change}, train_cfg=OPTIONS_TRAIN), change)
        for name, change in OPTIONS.items() if not names or name in names
    }
    return _train_and_score_each(work, "options", runs)


def stage_export(work: str, runs: dict, peak: float | None) -> dict:
    """Decoder latency (issue 6 item 4) through the export package: `vae-tf export` of
    the default and conv-small runs, then its benchmark (benchmarks/bench_export.py) on
    each export. Adds the batch-64 FLOP/s as a share of the matmul peak and the int8 /
    float32 file-size ratio."""
    bench = os.path.join(HERE, "bench_export.py")
    if not os.path.exists(bench):
        print("[export] skipped: benchmarks/bench_export.py (owned by the export package) is not there", flush=True)
        return {"skipped": "benchmarks/bench_export.py not present"}
    results = {}
    for name in ("default", "conv-small"):
        if name not in runs:
            continue
        exported = os.path.join(work, f"export-{name}")
        r = run_measured(vae_tf_cli() + ["export", runs[name]["run_dir"], "--out", exported],
                         os.path.join(work, f"export-{name}.log"))
        if r["returncode"]:
            print(f"[export] {name}: vae-tf export failed:\n{tail(r['log'])}", flush=True)
            results[name] = {**r, "failed": True}
            continue
        out = os.path.join(work, f"export-bench-{name}")
        os.makedirs(out, exist_ok=True)
        with common.recorded_load() as load:
            r = run_measured([sys.executable, bench, "--model", exported, "--out", out],
                             os.path.join(work, f"export-bench-{name}.log"))
        path = os.path.join(out, "export_results.json")
        if r["returncode"] or not os.path.exists(path):
            print(f"[export] {name}: bench_export.py failed:\n{tail(r['log'])}", flush=True)
            results[name] = {**r, "failed": True}
            continue
        with open(path) as f:
            res = json.load(f)
        rows = {row["runtime"]: row for row in res.get("results", [])}
        macs = res.get("decoder_macs_per_image")
        for row in rows.values():
            if macs and peak and row.get("batch64_us_per_image"):
                row["batch64_share_of_peak"] = 2 * macs / (row["batch64_us_per_image"] * 1e-6) / peak
        f32 = rows.get("LiteRT float32", {}).get("size_bytes")
        i8 = rows.get("LiteRT int8", {}).get("size_bytes")
        results[name] = {"decoder_macs_per_image": macs, "rows": list(rows.values()),
                         "int8_over_float32_size": i8 / f32 if i8 and f32 else None, "raw": path,
                         "split": None, "num_train_images": runs[name].get("num_train_images"), **load}
        print(f"[export] {name}: " + ", ".join(
            f"{k} {v.get('batch1_ms')} ms" for k, v in rows.items() if v.get("batch1_ms") is not None), flush=True)
    return results


def stage_conditional(work: str, extra_args: list[str] | None = None) -> dict:
    """benchmarks/bench_conditional.py in its own process (a classifier on the 4,000
    training digits, the default conditional model and `--prior normal`, all scored on
    the TEST slice); its conditional.json, with the paths of its files."""
    out = os.path.join(work, "conditional")
    os.makedirs(out, exist_ok=True)
    r = run_measured([sys.executable, os.path.join(HERE, "bench_conditional.py"), "--out", out,
                      "--work", os.path.join(work, "conditional-runs"), *(extra_args or [])],
                     os.path.join(work, "conditional.log"))
    path = os.path.join(out, "conditional.json")
    if r["returncode"] or not os.path.exists(path):
        print(f"[conditional] bench_conditional.py failed:\n{tail(r['log'])}", flush=True)
        return {**r, "failed": True}
    with open(path) as f:
        res = json.load(f)
    for name, m in res.get("models", {}).items():
        print(f"[conditional] {name}: agreement {m['agreement']:.1%}, test -log p(x|y) "
              f"{m['test']['iwae_nll']:.2f} nats", flush=True)
    return {**res, "raw": path, "markdown": os.path.join(out, "conditional.md")}


def _unique(sources: dict, key: str) -> str:
    """`key`, or `key [2]`, `key [3]`... when sources already has it."""
    name, n = key, 1
    while name in sources:
        n += 1
        name = f"{key} [{n}]"
    return name


MERGED_STAGES = ("train", "evaluate", "peers", "pairs", "best", "options", "grid", "export", "conditional")


def merge_earlier(results: dict, earlier: dict, path: str, pair_rounds: bool = False) -> None:
    """Copies into `results` the stages of an earlier results.json (read from `path`)
    that this run skipped (per model where a stage is per model; pair rounds added to
    this run's with `pair_rounds`), and records in results["merged_from"] where each
    came from: the earlier run itself, or, for a stage that run had merged in turn,
    that stage's original source (partly merged stages keep both)."""
    prior = earlier.get("merged_from") or {}
    for stage in MERGED_STAGES:
        if stage not in earlier:
            continue
        whole = stage not in results
        if whole:
            results[stage] = earlier[stage]
            if stage in (earlier.get("stage_load") or {}):
                results.setdefault("stage_load", {})[stage] = earlier["stage_load"][stage]
            key = stage
        elif stage in ("train", "peers", "export", "options", "grid"):  # per model: keep this run's, add the others
            added = [k for k in earlier[stage] if k not in results[stage]]
            results[stage].update({k: earlier[stage][k] for k in added})
            key = f"{stage}: {', '.join(added)}" if added else None
        elif stage == "pairs" and pair_rounds:
            added = _add_pair_rounds(results["pairs"], earlier["pairs"])
            key = f"pairs: the rounds of {', '.join(added)}" if added else None
        else:
            key = None
        if key is None:
            continue
        sources = results.setdefault("merged_from", {})
        sources[_unique(sources, key)] = prior.get(stage) or {"file": path, "machine": earlier.get("machine")}
        if whole or stage == "pairs":
            # Parts the earlier run had merged into what is copied keep their own source.
            for k, v in prior.items():
                if k != stage and k.split(":")[0] == stage:
                    sources[_unique(sources, k)] = v
    if "matmul_peak" not in results and "matmul_peak" in earlier:
        for key in ("matmul_peak_start", "matmul_peak_end", "matmul_peak"):
            results[key] = earlier[key]
        for key in ("peak_start", "peak_end"):
            if key in (earlier.get("stage_load") or {}):
                results.setdefault("stage_load", {})[key] = earlier["stage_load"][key]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="output directory (default: a new temporary one)")
    p.add_argument("--skip", default="", help=f"comma-separated stages to skip: {', '.join(STAGES)}")
    p.add_argument("--peer-epochs", type=int, default=30, help="epochs of each peer (default 30)")
    p.add_argument("--options", default="", help="comma-separated names of OPTIONS to run (default: all)")
    p.add_argument("--grid", default="",
                   help="semicolon-separated names of GRID rows to run (default: all; names contain commas)")
    p.add_argument("--conditional-quick", action="store_true",
                   help="run bench_conditional.py --quick in the conditional stage (a smoke test, not a result)")
    p.add_argument("--pair-rounds", type=int, default=3, help="back-to-back rounds of the pairs stage")
    p.add_argument("--pair-epochs", type=int, default=6, help="epochs per run in the pairs stage")
    p.add_argument("--peer-speed-only", action="store_true", help="time the peers without scoring them")
    p.add_argument("--speed-epochs", type=int, default=None,
                   help="epochs of the presets other than default in the train stage (default: their own)")
    p.add_argument("--presets", default="default,mlp,conv-small", help="presets the train stage runs")
    p.add_argument("--merge", action="append", default=[],
                   help="results.json of an earlier run: its stages that this run skipped are copied in "
                        "(marked in merged_from)")
    p.add_argument("--merge-pair-rounds", action="store_true",
                   help="with --merge and the pairs stage run: add the earlier file's pair rounds to this run's "
                        "(more rounds, one median) instead of keeping only this run's")
    p.add_argument("--commit-results", action="store_true",
                   help="also write benchmarks/results.json and benchmarks/results.md")
    args = p.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(STAGES)
    if unknown:
        p.error(f"unknown stage(s) {', '.join(sorted(unknown))}; stages: {', '.join(STAGES)}")
    work = os.path.abspath(args.out or tempfile.mkdtemp(prefix="vae-bench-"))
    os.makedirs(work, exist_ok=True)
    print(f"benchmark directory: {work}", flush=True)

    results: dict = {"machine": common.machine(), "skipped_stages": sorted(skip), "splits": common.split_sizes(),
                     "stage_load": {}}
    start = time.perf_counter()

    def stage(name: str, fn, *fn_args, **fn_kwargs):
        """Runs one stage, recording the load averages before and after it."""
        with common.recorded_load() as load:
            out = fn(*fn_args, **fn_kwargs)
        results["stage_load"][name] = load
        return out

    if "peak" not in skip:
        results["matmul_peak_start"] = stage("peak_start", common.matmul_peak_flops)
        print(f"[peak] {results['matmul_peak_start'] / 1e9:.0f} GFLOP/s", flush=True)
    if "train" not in skip:
        results["train"] = stage("train", stage_train, work, tuple(x for x in args.presets.split(",") if x),
                                 args.speed_epochs)
    if "evaluate" not in skip and "default" in results.get("train", {}):
        results["evaluate"] = stage("evaluate", stage_evaluate, work, results["train"]["default"]["run_dir"])
    if "peers" not in skip:
        results["peers"] = stage("peers", stage_peers, work, args.peer_epochs, quality=not args.peer_speed_only)
    if "pairs" not in skip:
        results["pairs"] = stage("pairs", stage_pairs, work, args.pair_rounds, args.pair_epochs)
    if "options" not in skip:
        results["options"] = stage("options", stage_options, work, [n for n in args.options.split(",") if n] or None)
    if "grid" not in skip:
        results["grid"] = stage("grid", stage_grid, work, [n.strip() for n in args.grid.split(";") if n.strip()] or None)
    if "best" not in skip:
        results["best"] = stage("best", stage_best, work)
    if "export" not in skip:
        results["export"] = stage("export", stage_export, work, results.get("train", {}),
                                  results.get("matmul_peak_start"))
    if "conditional" not in skip:
        results["conditional"] = stage("conditional", stage_conditional, work,
                                       ["--quick"] if args.conditional_quick else [])
    if "peak" not in skip:
        results["matmul_peak_end"] = stage("peak_end", common.matmul_peak_flops)
        results["matmul_peak"] = max(results["matmul_peak_start"], results["matmul_peak_end"])
        print(f"[peak] end {results['matmul_peak_end'] / 1e9:.0f} GFLOP/s", flush=True)
        for e in (results.get("export") or {}).values():  # shares against the run's peak
            macs = e.get("decoder_macs_per_image") if isinstance(e, dict) else None
            for row in (e.get("rows") or []) if macs else []:
                if row.get("batch64_us_per_image"):
                    row["batch64_share_of_peak"] = 2 * macs / (row["batch64_us_per_image"] * 1e-6) / results["matmul_peak"]
    results["total_seconds"] = time.perf_counter() - start

    for path in args.merge:
        with open(path) as f:
            merge_earlier(results, json.load(f), path, args.merge_pair_rounds)
    common.dump(os.path.join(work, "results.json"), results)
    results["summary"] = report.summarize(results)
    common.dump(os.path.join(work, "results.json"), results)
    markdown = report.markdown(results)
    with open(os.path.join(work, "results.md"), "w") as f:
        f.write(markdown)
    print(markdown)
    if args.commit_results:
        shutil.copy(os.path.join(work, "results.json"), os.path.join(HERE, "results.json"))
        shutil.copy(os.path.join(work, "results.md"), os.path.join(HERE, "results.md"))
        cond = results.get("conditional") or {}
        if "conditional" not in skip and not cond.get("failed") and cond.get("raw"):
            shutil.copy(cond["raw"], os.path.join(HERE, "conditional.json"))
            shutil.copy(cond["markdown"], os.path.join(HERE, "conditional.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
