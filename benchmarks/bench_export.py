"""Decoder latency of an exported model in each runtime, with file sizes and the
decoder's multiply-accumulates per image.

    python benchmarks/bench_export.py [--model saved_models/mnist_vae] [--runs 2000] [--batch64-runs 50]

Runtimes: the TF SavedModel (`serving_default` signature, TF 2 eager call of the
loaded signature), each LiteRT variant (`decode` signature runner, XNNPACK delegate)
and ONNX Runtime (CPU). Median over `--runs` calls after warm-up, the lowest of
`--windows` such medians taken back to back (on this host a busy second core slows a
whole window, not single calls: one all-cores window once read 0.161 ms where the
same decoder read 0.090 ms right before), at batch 1 and batch 64
(`--batch64-runs` calls) with one thread per runtime, so the numbers compare
engines, not core counts; batch 1 again with as many threads as the machine has cores
(`batch1_ms_all_cores`), and batch 1 as the runtime's own call on prepared inputs
(`batch1_ms_runtime[_all_cores]`, without vae_tf.export's input checks). A
TFLite decoder with a fixed batch of 1 (convolutional models, see
vae_tf/export/tflite.py) decodes batch 64 as 64 calls. Where the shipped TFLite files
have an open batch, the float32 and int8 decoders converted with a fixed batch of 1 are
also timed, to show the cost of the open batch dimension. Every timed figure records
the machine's load averages before and after it (`os.getloadavg()`, 1/5/15 minutes:
row["load"][figure], and the row's first and last as row["load_before"] /
row["load_after"]); the Markdown prints them. Writes benchmarks/export_results.json
and .md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _triplet(values) -> str:
    return "not recorded" if not values else "/".join(f"{v:.2f}" for v in values)


def _time(fn, runs: int, windows: int = 3, warmup: int = 50) -> float:
    """Milliseconds per call of `fn`: the lowest of `windows` medians over `runs` calls."""
    for _ in range(warmup):
        fn()
    medians = []
    for _ in range(windows):
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
    return min(medians) * 1e3


def _fixed_batch_tflite(saved_model_dir: str, latent_dim: int, conditional: bool, variant: str, tmp: str) -> str:
    """A decoder .tflite with input [1, D], converted from the serving SavedModel's
    `decode` signature (so it needs no run directory)."""
    import tensorflow as tf

    from vae_tf.export import tflite

    loaded = tf.saved_model.load(saved_model_dir)
    decode = loaded.signatures["decode"]
    specs = [tf.TensorSpec([1, latent_dim], tf.float32, name="z")]
    if conditional:
        specs.append(tf.TensorSpec([1], tf.int32, name="label"))
    module = tf.Module()
    module.loaded = loaded
    module.decode = tf.function(lambda *a: {"image": decode(**dict(zip(["z", "label"], a)))["image"]}, input_signature=specs)
    path = os.path.join(tmp, "fixed")
    tf.saved_model.save(module, path, signatures={"decode": module.decode.get_concrete_function()})

    def rep():
        rng = np.random.default_rng(0)
        for i in range(64):
            x = {"z": rng.standard_normal((1, latent_dim)).astype(np.float32)}
            if conditional:
                x["label"] = np.array([i % 10], np.int32)
            yield x

    out = os.path.join(tmp, f"fixed_{variant}.tflite")
    with open(out, "wb") as f:
        f.write(tflite.convert(path, variant, rep, conditional))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.join(REPO, "saved_models", "mnist_vae"))
    # Batch-1 calls take ~0.1 ms: 2,000 of them (0.2-0.5 s) keep the median steady on a
    # machine whose speed drifts; 200 moved it by up to 25% between invocations.
    parser.add_argument("--runs", type=int, default=2000, help="calls timed at batch 1 (default 2000)")
    parser.add_argument("--batch64-runs", type=int, default=50, help="calls timed at batch 64 (default 50)")
    parser.add_argument("--windows", type=int, default=3,
                        help="back-to-back timing windows per figure; the lowest median is kept (default 3)")
    parser.add_argument("--out", default=HERE)
    parser.add_argument("--note", default="",
                        help="free text printed with the results (the machine's load averages are measured and "
                             "printed in any case)")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    sys.path.insert(0, HERE)
    from common import load_average, recorded_load

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from vae_tf.export import load_exported

    exported = load_exported(args.model)
    m = exported.manifest
    d, conditional = m["latent_dim"], m["conditional"]
    rows = []

    cores = os.cpu_count() or 1

    def inputs(batch):
        z = np.random.default_rng(batch).standard_normal((batch, d)).astype(np.float32)
        return z, (np.arange(batch) % m["num_classes"]).astype(np.int32) if conditional else None

    def runtime_call(decoder):
        """The runtime's own batch-1 call on inputs prepared once: what an app linking
        LiteRT or ONNX Runtime pays per image, without vae_tf.export's input checks."""
        feed = decoder._inputs(*inputs(1))
        if hasattr(decoder, "runner"):
            return lambda: decoder.runner(**feed)
        return lambda: decoder.session.run(["image"], feed)

    def timed(row, key, fn, runs):
        """row[key] = milliseconds per call of `fn`, with the load averages around it."""
        with recorded_load() as load:
            row[key] = round(_time(fn, runs, args.windows), 4)
        row.setdefault("load", {})[key] = load
        row.setdefault("load_before", load["load_before"])
        row["load_after"] = load["load_after"]

    def bench(runtime, artifact, size, decoder, decoder_all_cores=None):
        row = {"runtime": runtime, "artifact": artifact, "size_bytes": size}
        for batch in (1, 64):
            z, label = inputs(batch)
            runs = args.runs if batch == 1 else args.batch64_runs
            timed(row, f"batch{batch}_ms", lambda: decoder.decode(z, label), runs)
            if batch == 1 and decoder_all_cores is not None:
                timed(row, "batch1_ms_all_cores", lambda: decoder_all_cores.decode(z, label), runs)
                timed(row, "batch1_ms_runtime", runtime_call(decoder), args.runs)
                timed(row, "batch1_ms_runtime_all_cores", runtime_call(decoder_all_cores), args.runs)
        row["batch64_us_per_image"] = round(row["batch64_ms"] * 1e3 / 64, 2)
        rows.append(row)
        print(json.dumps(row))

    load_start = load_average()
    saved = m["artifacts"]["saved_model"]
    bench("TF SavedModel (serving_default)", saved["path"], saved["size_bytes"], exported)
    for variant in ("float32", "float16", "dynamic_int8", "int8"):
        name = f"decoder_{variant}.tflite"
        bench(f"LiteRT {variant}", name, m["artifacts"][name]["size_bytes"],
              exported.tflite(variant, num_threads=1), exported.tflite(variant, num_threads=cores))
    bench("ONNX Runtime", "decoder.onnx", m["artifacts"]["decoder.onnx"]["size_bytes"],
          exported.onnx(num_threads=1), exported.onnx(num_threads=cores))
    tflite_batch = m.get("tflite_batch")

    with tempfile.TemporaryDirectory() as tmp:
        from ai_edge_litert.interpreter import Interpreter

        for variant in ("float32", "int8") if tflite_batch is None else ():
            path = _fixed_batch_tflite(exported.saved_model_dir, d, conditional, variant, tmp)
            runner = Interpreter(model_path=path, num_threads=1).get_signature_runner("decode")
            z = np.random.default_rng(1).standard_normal((1, d)).astype(np.float32)
            kw = {"z": z, **({"label": np.zeros([1], np.int32)} if conditional else {})}
            row = {"runtime": f"LiteRT {variant}, fixed batch 1 (not shipped)", "artifact": "-",
                   "size_bytes": os.path.getsize(path)}
            timed(row, "batch1_ms", lambda: runner(**kw), args.runs)
            row.update(batch64_ms=None, batch64_us_per_image=None)
            rows.append(row)
            print(json.dumps(row))

    result = {
        "model": os.path.relpath(args.model, REPO),
        "config": m["config"]["model"],
        "decoder_macs_per_image": m["decoder_macs_per_image"],
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu": _cpu(), "cores": cores, "threads_per_runtime": 1, "note": args.note},
        "load_before": load_start,
        "load_after": load_average(),
        "tflite_batch": tflite_batch,
        "software": {"tensorflow": tf.__version__, "python": platform.python_version()},
        "runs": args.runs,
        "batch64_runs": args.batch64_runs,
        "windows": args.windows,
        "results": rows,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "export_results.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    lines = [
        f"Decoder of `{result['model']}` ({m['config']['model']['architecture']}, latent {d}): "
        f"{result['decoder_macs_per_image']:,} multiply-accumulates per image. "
        f"{result['machine']['cpu']}, {cores} cores, 1 thread per runtime (and {cores} at batch 1 where "
        f"shown), median of {args.runs} calls (batch 64: {args.batch64_runs}), lowest of {args.windows} "
        f"back-to-back windows, {result['date']}. "
        f"TFLite batch: {'open' if tflite_batch is None else f'fixed at {tflite_batch}'}. "
        f"Machine load averages (1/5/15 min) before -> after all timings: {_triplet(result['load_before'])} -> "
        f"{_triplet(result['load_after'])}."
        + (f" {args.note}" if args.note else ""),
        "",
        "Batch 1 through `vae_tf.export`'s decoders (input checks included), and as the runtime's own call "
        "on prepared inputs (`runner(**feed)` / `session.run`), which is what an app linking the runtime pays.",
        "",
        f"| runtime | artifact | size | batch 1 (ms) | batch 1, {cores} threads (ms) | batch 1, runtime call (ms) "
        f"| batch 1, runtime call, {cores} threads (ms) | batch 64 (ms) | batch 64 (µs/image) "
        "| load before -> after the row's timings (1/5/15 min) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        b64 = "-" if r["batch64_ms"] is None else f"{r['batch64_ms']:.3f}"
        per = "-" if r["batch64_us_per_image"] is None else f"{r['batch64_us_per_image']:.1f}"
        ms = {k: "-" if r.get(k) is None else f"{r[k]:.3f}"
              for k in ("batch1_ms_all_cores", "batch1_ms_runtime", "batch1_ms_runtime_all_cores")}
        lines.append(f"| {r['runtime']} | {r['artifact']} | {r['size_bytes'] / 1024:.0f} KiB | {r['batch1_ms']:.3f} | "
                     f"{ms['batch1_ms_all_cores']} | {ms['batch1_ms_runtime']} | {ms['batch1_ms_runtime_all_cores']} | "
                     f"{b64} | {per} | {_triplet(r.get('load_before'))} -> {_triplet(r.get('load_after'))} |")
    with open(os.path.join(args.out, "export_results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
