"""tf_keras' Adam against the fused Adam (`vae_tf.optimizers.FusedAdam`): training
steps alone, per preset, no XLA.

    python benchmarks/bench_optimizer.py                      # mlp, default, conv-small
    python benchmarks/bench_optimizer.py --presets mlp --calls 60

One process per preset (with the preset's oneDNN setting, as `vae-tf train` runs it)
builds two copies of the preset's VAE on the bundled digits (batch 128, the same
initialization, the training pipeline as `vae_tf.train` runs it), one compiled with `tf_keras.optimizers.Adam`, one with `FusedAdam`,
calls each one's `make_train_function` (32 steps per call) once to trace it, then
times --calls calls of each, alternating, so that both see the same machine. Reports
the median images/s (32 x 128 / median seconds) of each and their ratio, with the
machine's load averages before and after. Run it alone: on two cores any other work
moves the figures. Writes OUT/optimizer.json and OUT/optimizer.md; --commit-results
also copies them to benchmarks/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

STEPS_PER_CALL = 32
BATCH = 128

CHILD = r"""
import json, os, statistics, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
import tf_keras as keras
from vae_tf.config import apply_preset
from vae_tf.data import load_datasets
from vae_tf.model import VAE
from vae_tf.optimizers import FusedAdam
preset, calls, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rc = apply_preset(preset)
ds = load_datasets("bundled", batch_size=batch, preprocessing=rc.train.preprocessing)
options = tf.data.Options()
options.autotune.enabled = False  # as `vae_tf.train` runs in-memory splits
functions = {}
for name, optimizer in (("keras", keras.optimizers.Adam(rc.train.learning_rate)),
                        ("fused", FusedAdam(rc.train.learning_rate))):
    keras.utils.set_random_seed(0)
    model = VAE(rc.model, noise_seed=0)
    model.initialize_output_bias(ds.splits.train_images)
    model.compile(optimizer=optimizer, jit_compile=False, steps_per_execution=steps)
    model.optimizer.build(model.trainable_variables)
    it = iter(ds.train.with_options(options).repeat())
    f = model.make_train_function()
    f(it)["loss"].numpy()
    functions[name] = (f, it)
times = {name: [] for name in functions}
for _ in range(calls):
    for name, (f, it) in functions.items():
        t = time.perf_counter(); f(it)["loss"].numpy(); times[name].append(time.perf_counter() - t)
print(json.dumps({name: {"call_seconds": t, "images_per_second": steps * batch / statistics.median(t)}
                  for name, t in times.items()}))
"""


def measure(preset: str, calls: int) -> dict:
    import common
    from vae_tf.config import apply_preset

    onednn = apply_preset(preset).train.onednn
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn else "0"
    with common.recorded_load() as load:
        out = subprocess.run([sys.executable, "-c", CHILD, preset, str(calls), str(STEPS_PER_CALL), str(BATCH)],
                             env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["ratio"] = result["fused"]["images_per_second"] / result["keras"]["images_per_second"]
    return {**result, **load}


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# tf_keras' Adam against the fused Adam: training steps per preset",
        "",
        f"{m['date']}, {m['cpu']} ({m['cores']} cores), TensorFlow {m['tensorflow']}, commit {m['commit']}; "
        f"one process per preset, {STEPS_PER_CALL} steps of batch {BATCH} per call, the two optimizers' calls "
        "alternating, no XLA.",
        "",
        "| preset | calls | tf_keras Adam, images/s | FusedAdam, images/s | fused / tf_keras | load before -> after (1 min) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for preset, r in results["presets"].items():
        load = (f"{r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f}"
                if r.get("load_before") and r.get("load_after") else "n/a")
        lines.append(f"| {preset} | {r['calls']} | {r['keras']['images_per_second']:,.0f} "
                     f"| {r['fused']['images_per_second']:,.0f} | **{r['ratio']:.2f}** | {load} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="output directory (default: a new temporary one)")
    p.add_argument("--presets", default="mlp,default,conv-small", help="comma-separated presets")
    p.add_argument("--calls", type=int, default=None,
                   help="timed calls per optimizer (default: 40 for mlp, 8 for the others)")
    p.add_argument("--commit-results", action="store_true", help="also write benchmarks/optimizer.json and .md")
    args = p.parse_args(argv)
    import common

    out = args.out or tempfile.mkdtemp(prefix="vae-optimizer-")
    os.makedirs(out, exist_ok=True)
    results = {"machine": common.machine(), "presets": {}}
    for preset in [x.strip() for x in args.presets.split(",") if x.strip()]:
        calls = args.calls or (40 if preset == "mlp" else 8)
        r = measure(preset, calls)
        r["calls"] = calls
        results["presets"][preset] = r
        print(f"[{preset}] tf_keras {r['keras']['images_per_second']:,.0f}, fused "
              f"{r['fused']['images_per_second']:,.0f} images/s ({r['ratio']:.2f}x)", flush=True)
    for name, text in (("optimizer.json", json.dumps(results, indent=2) + "\n"), ("optimizer.md", markdown(results))):
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
        if args.commit_results:
            shutil.copy(os.path.join(out, name), os.path.join(HERE, name))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
