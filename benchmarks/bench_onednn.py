"""oneDNN's CPU kernels on or off, per preset: training steps alone, no XLA.

    python benchmarks/bench_onednn.py                    # mlp, default, conv-small; 3 pairs each
    python benchmarks/bench_onednn.py --presets mlp --pairs 5

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, at import, so each measurement is its own
process: it builds the preset's VAE on the bundled digits (batch 128), calls
`VAE.make_train_function` with 32 steps per call once (tracing), then times --calls
calls and reports the median (training images/s = 32 x 128 / median seconds). Each
pair runs oneDNN on, then off, back to back; the pair's ratio is off / on. Every
process records the machine's load averages before and after it. Run it alone: on
two cores any other work moves the figures. Writes OUT/onednn.json and OUT/onednn.md;
--commit-results also copies them to benchmarks/ (the table behind `TrainConfig.onednn`
and the `mlp` preset's choice, docs/results/notes.md).
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

STEPS_PER_CALL = 32
BATCH = 128

# The child: one process, one setting (the environment decides oneDNN before the import).
CHILD = r"""
import json, os, statistics, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tf_keras as keras
from vae_tf.config import apply_preset
from vae_tf.data import load_datasets
from vae_tf.model import VAE
from vae_tf.runtime import onednn_enabled
preset, calls, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rc = apply_preset(preset)
ds = load_datasets("bundled", batch_size=batch, preprocessing=rc.train.preprocessing)
model = VAE(rc.model, noise_seed=0)
model.initialize_output_bias(ds.splits.train_images)
model.compile(optimizer=keras.optimizers.Adam(rc.train.learning_rate), jit_compile=False, steps_per_execution=steps)
model.optimizer.build(model.trainable_variables)
it = iter(ds.train.repeat())
f = model.make_train_function()
t = time.perf_counter(); f(it)["loss"].numpy(); first = time.perf_counter() - t
times = []
for _ in range(calls):
    t = time.perf_counter(); f(it)["loss"].numpy(); times.append(time.perf_counter() - t)
print(json.dumps({"onednn": onednn_enabled(), "first_call_seconds": first, "call_seconds": times,
                  "images_per_second": steps * batch / statistics.median(times)}))
"""


def measure(preset: str, onednn: bool, calls: int) -> dict:
    import common

    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1" if onednn else "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    with common.recorded_load() as load:
        out = subprocess.run([sys.executable, "-c", CHILD, preset, str(calls), str(STEPS_PER_CALL), str(BATCH)],
                             env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if result["onednn"] != onednn:
        raise RuntimeError(f"asked for oneDNN {onednn}, the process ran with {result['onednn']}")
    return {**result, **load}


def summarize(pairs: list[dict]) -> dict:
    on = [p["on"]["images_per_second"] for p in pairs]
    off = [p["off"]["images_per_second"] for p in pairs]
    ratios = sorted(b / a for a, b in zip(on, off))
    return {"on_images_per_second": statistics.median(on), "off_images_per_second": statistics.median(off),
            "on_range": [min(on), max(on)], "off_range": [min(off), max(off)],
            "ratios": ratios, "median_ratio": statistics.median(ratios)}


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# oneDNN's kernels on or off: training steps per preset",
        "",
        f"{m['date']}, {m['cpu']} ({m['cores']} cores), TensorFlow {m['tensorflow']}, commit {m['commit']}; "
        f"{results['pairs']} pair(s) per preset (on, then off, each its own process), {results['calls']} calls of "
        f"{STEPS_PER_CALL} steps of batch {BATCH} each, no XLA.",
        "",
        "| preset | oneDNN on, images/s | oneDNN off, images/s | off / on (median; pairs) |",
        "| --- | ---: | ---: | --- |",
    ]
    for preset, r in results["presets"].items():
        s = r["summary"]
        lines.append(f"| {preset} | {s['on_images_per_second']:,.0f} | {s['off_images_per_second']:,.0f} "
                     f"| **{s['median_ratio']:.2f}** ({', '.join(f'{x:.2f}' for x in s['ratios'])}) |")
    lines += ["", "| preset | pair | oneDNN | images/s | load before -> after (1 min) |", "| --- | ---: | --- | ---: | --- |"]
    for preset, r in results["presets"].items():
        for i, p in enumerate(r["pairs"], 1):
            for key in ("on", "off"):
                e = p[key]
                load = (f"{e['load_before'][0]:.2f} -> {e['load_after'][0]:.2f}"
                        if e.get("load_before") and e.get("load_after") else "n/a")
                lines.append(f"| {preset} | {i} | {key} | {e['images_per_second']:,.0f} | {load} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="output directory (default: a new temporary one)")
    p.add_argument("--presets", default="mlp,default,conv-small", help="comma-separated presets")
    p.add_argument("--pairs", type=int, default=3, help="on/off pairs per preset (default 3)")
    p.add_argument("--calls", type=int, default=None,
                   help="timed calls per process (default: 30 for mlp, 6 for the others)")
    p.add_argument("--commit-results", action="store_true", help="also write benchmarks/onednn.json and onednn.md")
    args = p.parse_args(argv)
    import common

    out = args.out or tempfile.mkdtemp(prefix="vae-onednn-")
    os.makedirs(out, exist_ok=True)
    results = {"machine": common.machine(), "pairs": args.pairs, "calls": args.calls or "30 (mlp) / 6", "presets": {}}
    for preset in [x.strip() for x in args.presets.split(",") if x.strip()]:
        calls = args.calls or (30 if preset == "mlp" else 6)
        pairs = []
        for i in range(args.pairs):
            pair = {"on": measure(preset, True, calls), "off": measure(preset, False, calls)}
            pairs.append(pair)
            print(f"[{preset}] pair {i + 1}: on {pair['on']['images_per_second']:,.0f}, "
                  f"off {pair['off']['images_per_second']:,.0f} images/s", flush=True)
        results["presets"][preset] = {"calls": calls, "pairs": pairs, "summary": summarize(pairs)}
    for name, text in (("onednn.json", json.dumps(results, indent=2) + "\n"), ("onednn.md", markdown(results))):
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
        if args.commit_results:
            shutil.copy(os.path.join(out, name), os.path.join(HERE, name))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
