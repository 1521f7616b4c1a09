"""Whole epochs of `vae-tf train --preset mlp` against the PyTorch peer, back to back
(issue 13 section 4):

    python benchmarks/bench_epoch.py --out /tmp/vae-epoch                 # 3 rounds, 30 epochs each
    python benchmarks/bench_epoch.py --out /tmp/vae-epoch --rounds 1 --epochs 4   # a smoke test, not a result
    python benchmarks/bench_epoch.py --variants default                    # the preset only

Each round runs, one after the other on the same machine, `vae-tf train --data bundled
--preset mlp` (a subprocess, as a user runs it; by default three times: as configured,
with oneDNN off; with `--onednn`, TensorFlow's default kernels; and with `--jit`, the step
XLA-compiled) and the pytorch/examples peer
(`../shared/peers/peers_torch.py`, through the torch venv's python: `--torch-python`,
or the environment variable VAE_BENCH_TORCH_PYTHON) on the same 4,000 training digits.
From our run's `history.json`:

- whole-epoch images/s: training images per second of epoch wall time (the epoch's
  steps, validation pass, checkpoint and backup included: `epoch_seconds`), median over
  the epochs after the first, which traces and compiles;
- training images/s: the same over the training steps alone (`step_seconds`);
- the first epoch's own duration, and the time from launching `vae-tf train` to the
  end of its first epoch (process start, imports, data, model, tracing included);
- the whole command's wall time and peak resident memory.

From the peer: its training images/s (4,000 / median epoch seconds after the first;
the peer has no validation pass or checkpoint). Each round's ratio is ours (whole
epochs) / the peer's; the summary gives the median over rounds against the targets
(>= 1.2x; first epoch <= 1.5 s).

Every run records the machine's load averages before and after it
(`os.getloadavg()`, 1/5/15 minutes): on a shared machine compare rounds with similar
load. Writes OUT/epoch.json and OUT/epoch.md; `--commit-results` also copies them to
benchmarks/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
from run_all import PEERS_DIR, TORCH_PYTHON, last_json_line, run_measured, tail, vae_tf_cli  # noqa: E402

PRESET = "mlp"
PEER = "pytorch_examples"
TARGET_RATIO = 1.2  # whole-epoch images/s over the peer's training images/s
TARGET_FIRST_EPOCH_SECONDS = 1.5


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def run_ours(work: str, name: str, epochs: int | None, flags: list[str]) -> dict:
    """One `vae-tf train --preset mlp` run: its figures from history.json."""
    run_dir = os.path.join(work, f"run-{name}")
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = vae_tf_cli() + ["train", "--data", "bundled", "--preset", PRESET, "--out", run_dir, "--no-pictures", *flags]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    with common.recorded_load() as load:
        launched = time.time()
        r = run_measured(cmd, os.path.join(work, f"{name}.log"))
    if r["returncode"]:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{tail(r['log'])}")
    with open(os.path.join(run_dir, "history.json")) as f:
        history = json.load(f)
    h, first = history["history"], history["first_epoch"]
    images = history["images_per_epoch"]
    epoch_seconds, step_seconds = h["epoch_seconds"], h["step_seconds"]
    return {
        **r,
        **load,
        "flags": flags,
        "epochs": len(epoch_seconds),
        "images_per_epoch": images,
        "epoch_images_per_second": images / statistics.median(epoch_seconds[1:]),
        "step_images_per_second": images / statistics.median(step_seconds[1:]),
        # What the epochs after the first spend outside their steps (validation,
        # checkpoint, backup, logs), as a share of the epoch.
        "overhead_share": 1 - statistics.median(step_seconds[1:]) / statistics.median(epoch_seconds[1:]),
        "first_epoch_seconds": first["seconds"],
        "launch_to_first_epoch_end_seconds": first["end_time"] - launched,
        "process_start_to_first_epoch_end_seconds": first["since_process_start"],
        "checkpoints": history["checkpoints"],
        "epoch_seconds": epoch_seconds,
        "step_seconds": step_seconds,
        "final_val_elbo": h["val_elbo"][-1] if "val_elbo" in h else None,
        # What the steps ran on (history.json): XLA, or oneDNN's / TensorFlow's own kernels.
        "kernels": kernels(history),
    }


def kernels(history: dict) -> str | None:
    """"XLA", "oneDNN" or "TF (oneDNN off)" from a run's history.json; None if it
    predates those fields."""
    if history.get("jit_compile"):
        return "XLA"
    if "onednn" not in history:
        return None
    return "oneDNN" if history["onednn"] else "TF (oneDNN off)"


def run_peer(work: str, name: str, epochs: int, data_dir: str, torch_python: str) -> dict:
    """One run of the PyTorch peer: its training images/s (4,000 / median epoch seconds
    after the first)."""
    cmd = [torch_python, os.path.join(PEERS_DIR, "peers_torch.py"), "--epochs", str(epochs), "--train-idx", data_dir,
           "--out", os.path.join(work, f"{name}-out")]
    with common.recorded_load() as load:
        r = run_measured(cmd, os.path.join(work, f"{name}.log"))
    if r["returncode"]:
        raise RuntimeError(f"peer {PEER} failed:\n{tail(r['log'])}")
    result = last_json_line(r["log"])
    return {**r, **load, "epochs": epochs, "images_per_second": result["images_per_s"],
            "seconds_per_epoch": result["s_per_epoch"], "train_seconds": result["train_s"]}


def summarize(rounds: list[dict], variants: list[str]) -> dict:
    out = {}
    for variant in variants:
        ours = [r[variant] for r in rounds]
        ratios = sorted(r[variant]["epoch_images_per_second"] / r["peer"]["images_per_second"] for r in rounds)
        first = _median([o["first_epoch_seconds"] for o in ours])
        out[variant] = {
            "kernels": ", ".join(sorted({o.get("kernels") or "n/a" for o in ours})),
            "epoch_images_per_second": _median([o["epoch_images_per_second"] for o in ours]),
            "step_images_per_second": _median([o["step_images_per_second"] for o in ours]),
            "overhead_share": _median([o["overhead_share"] for o in ours]),
            "first_epoch_seconds": first,
            "launch_to_first_epoch_end_seconds": _median([o["launch_to_first_epoch_end_seconds"] for o in ours]),
            "wall_seconds": _median([o["wall_seconds"] for o in ours]),
            "ratios": ratios,
            "median_ratio": statistics.median(ratios),
            "ratio_met": statistics.median(ratios) >= TARGET_RATIO,
            "first_epoch_met": first is not None and first <= TARGET_FIRST_EPOCH_SECONDS,
        }
    out["peer_images_per_second"] = _median([r["peer"]["images_per_second"] for r in rounds])
    return out


def markdown(results: dict) -> str:
    m, s = results["machine"], results["summary"]
    lines = [
        "# Whole epochs: `vae-tf train --preset mlp` vs the PyTorch peer",
        "",
        f"{m['date']}, {m['cpu']} ({m['cores']} cores), TensorFlow {m['tensorflow']}, commit {m['commit']}; "
        f"{results['rounds_run']} round(s) back to back, {results['epochs'] or 'default'} epochs per run, "
        f"{results['num_train_images']:,} training images.",
        "",
        "| variant | kernels | whole-epoch images/s | training images/s | time outside the steps | first epoch (s) "
        "| launch to first epoch end (s) | run wall (s) | vs peer (median; rounds) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for variant in results["variants"]:
        v = s[variant]
        lines.append(
            f"| {variant} | {v.get('kernels', 'n/a')} | {v['epoch_images_per_second']:,.0f} | {v['step_images_per_second']:,.0f} "
            f"| {100 * v['overhead_share']:.1f}% | {v['first_epoch_seconds']:.2f} "
            f"| {v['launch_to_first_epoch_end_seconds']:.2f} | {v['wall_seconds']:.1f} "
            f"| **{v['median_ratio']:.2f}** ({', '.join(f'{r:.2f}' for r in v['ratios'])}) |"
        )
    lines += [
        "",
        f"Peer ({PEER}) training images/s, median: {s['peer_images_per_second']:,.0f}.",
        "",
        "Targets: whole-epoch images/s >= "
        f"{TARGET_RATIO}x the peer's training images/s; first epoch <= {TARGET_FIRST_EPOCH_SECONDS} s.",
        "",
    ]
    for variant in results["variants"]:
        v = s[variant]
        lines.append(f"- {variant}: ratio {'met' if v['ratio_met'] else 'not met'} ({v['median_ratio']:.2f}), "
                     f"first epoch {'met' if v['first_epoch_met'] else 'not met'} ({v['first_epoch_seconds']:.2f} s)")
    lines += ["", "| round | run | images/s | first epoch (s) | load before -> after (1 min) |", "| --- | --- | ---: | ---: | --- |"]
    for i, r in enumerate(results["rounds"], 1):
        for variant in results["variants"]:
            o = r[variant]
            lines.append(f"| {i} | ours, {variant} | {o['epoch_images_per_second']:,.0f} (whole epochs) "
                         f"| {o['first_epoch_seconds']:.2f} | {_load(o)} |")
        p = r["peer"]
        lines.append(f"| {i} | peer | {p['images_per_second']:,.0f} (training) | | {_load(p)} |")
    return "\n".join(lines) + "\n"


def _load(entry: dict) -> str:
    before, after = entry.get("load_before"), entry.get("load_after")
    return f"{before[0]:.2f} -> {after[0]:.2f}" if before and after else "n/a"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="output directory (default: a new temporary one)")
    p.add_argument("--rounds", type=int, default=3, help="back-to-back rounds (default 3)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run, ours and the peer's (default: the preset's)")
    p.add_argument("--variants", default="default;--onednn;--jit",
                   help="semicolon-separated flag sets for our runs, 'default' for none (default: "
                   "'default;--onednn;--jit': the preset as configured (oneDNN off), with oneDNN's kernels, and "
                   "the step XLA-compiled)")
    p.add_argument("--torch-python", default=TORCH_PYTHON,
                   help="python of a venv with torch (default: $VAE_BENCH_TORCH_PYTHON or ~/.cache/vae-tf-torch-venv)")
    p.add_argument("--commit-results", action="store_true", help="also write benchmarks/epoch.json and epoch.md")
    args = p.parse_args(argv)
    if not os.path.exists(args.torch_python):
        p.error(f"no python at {args.torch_python}: create a venv with `pip install torch==2.13.0 numpy` and pass "
                "--torch-python or set VAE_BENCH_TORCH_PYTHON")
    if not os.path.exists(os.path.join(PEERS_DIR, "peers_torch.py")):
        p.error(f"the peer is missing: {PEERS_DIR}/peers_torch.py")
    variants = [v.strip() for v in args.variants.split(";") if v.strip()]
    work = os.path.abspath(args.out or tempfile.mkdtemp(prefix="vae-epoch-"))
    os.makedirs(work, exist_ok=True)
    print(f"benchmark directory: {work}", flush=True)

    data_dir, _, sizes = common.write_peer_data(work)
    from vae_tf.config import apply_preset

    epochs = args.epochs or apply_preset(PRESET).train.epochs
    results = {"machine": common.machine(), "preset": PRESET, "peer": PEER, "epochs": args.epochs,
               "num_train_images": sizes["train"], "splits": sizes, "variants": variants, "rounds": []}
    for i in range(1, args.rounds + 1):
        entry = {}
        for variant in variants:
            flags = [] if variant == "default" else variant.split()
            name = f"ours-{i}-{variant.strip('-').replace(' ', '_')}"
            entry[variant] = run_ours(work, name, args.epochs, flags)
            o = entry[variant]
            print(f"[round {i}] ours {variant}: whole epochs {o['epoch_images_per_second']:.0f} images/s "
                  f"(training {o['step_images_per_second']:.0f}), first epoch {o['first_epoch_seconds']:.2f} s, "
                  f"launch to its end {o['launch_to_first_epoch_end_seconds']:.2f} s, load {_load(o)}", flush=True)
        entry["peer"] = run_peer(work, f"peer-{i}", epochs, data_dir, args.torch_python)
        print(f"[round {i}] peer: {entry['peer']['images_per_second']:.0f} images/s, load {_load(entry['peer'])}",
              flush=True)
        results["rounds"].append(entry)
    results["rounds_run"] = len(results["rounds"])
    results["summary"] = summarize(results["rounds"], variants)
    common.dump(os.path.join(work, "epoch.json"), results)
    text = markdown(results)
    with open(os.path.join(work, "epoch.md"), "w") as f:
        f.write(text)
    print(text)
    if args.commit_results:
        shutil.copy(os.path.join(work, "epoch.json"), os.path.join(HERE, "epoch.json"))
        shutil.copy(os.path.join(work, "epoch.md"), os.path.join(HERE, "epoch.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
