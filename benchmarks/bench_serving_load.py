"""Load on the exported SavedModel: its serving signatures answer many requests from a
pool of threads in one process, with no error and flat memory.

    python benchmarks/bench_serving_load.py                      # the packaged model, saved_models/mnist_vae
    python benchmarks/bench_serving_load.py --saved-model DIR --requests 20000 --threads 8

The SavedModel is the one `vae-tf export` writes (`DIR/serving/<version>/`, tag
`serve`): by default the newest version under `saved_models/mnist_vae/serving/` (the
packaged model); only when that is missing, one written by the export stage's
`save_serving` (the code path `export_run` uses) from a tiny model trained for one
epoch on the bundled digits (said so in the results). The results record which model
was loaded: its path, and from the export's manifest.json (when there is one) when
and by what it was created, its run directory and commit (where the manifest has
one), plus the last git commit that touched the export directory.

The machine's load averages (`os.getloadavg()`, 1/5/15 minutes) are recorded before
and after the warm-up and the timed requests, and printed with the figures.

Requests cycle over the signatures `serving_default` (decode 1 latent), `sample`
(4 images), `encode` (1 image) and `reconstruct` (1 image); each response is checked
(shape, finite, pixels in [0, 1]) and anything else counts as an error. Resident
memory (RSS from /proc/self/statm) is read after warm-up, at the middle and at the
end; "flat" means the end is within `--rss-slack-mb` of the post-warm-up level.
Writes benchmarks/serving_load.json and benchmarks/serving_load.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def rss_mb() -> float:
    """Current resident set size of this process in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def find_saved_model(path: str | None) -> tuple[str, str]:
    """Returns (SavedModel dir, where it came from)."""
    if path:
        versions = sorted(glob.glob(os.path.join(path, "serving", "*")), key=lambda p: int(os.path.basename(p)))
        return (versions[-1] if versions else path), "given"
    committed = os.path.join(REPO, "saved_models", "mnist_vae", "serving")
    versions = sorted((p for p in glob.glob(os.path.join(committed, "*")) if os.path.basename(p).isdigit()),
                      key=lambda p: int(os.path.basename(p)))
    if versions:
        return versions[-1], "saved_models/mnist_vae"
    return _tiny_saved_model(), "tiny model (1 epoch on the bundled digits), exported with save_serving"


def load_average() -> list[float] | None:
    """The machine's 1/5/15-minute load averages, rounded (as benchmarks/common.py's)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def model_info(saved_model: str) -> dict:
    """Which model: the export directory's manifest (created, producer, commit, run
    directory, serving version) when `saved_model` is DIR/serving/<version>, and the
    last git commit that touched that directory."""
    info: dict = {}
    export_dir = os.path.dirname(os.path.dirname(os.path.abspath(saved_model)))
    manifest_path = os.path.join(export_dir, "manifest.json")
    if os.path.basename(os.path.dirname(os.path.abspath(saved_model))) == "serving" and os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
        info["manifest"] = os.path.relpath(manifest_path, REPO) if manifest_path.startswith(REPO) else manifest_path
        for key in ("created", "producer", "commit", "git_commit", "run_dir", "serving_version", "tensorflow",
                    "latent_dim", "prior", "conditional"):
            if key in manifest:
                info[key] = manifest[key]
        model = (manifest.get("config") or {}).get("model") or {}
        if model:
            info["architecture"] = model.get("architecture")
            info["hidden_units"] = model.get("hidden_units")
        try:
            out = subprocess.run(["git", "log", "-1", "--format=%h %cs", "--", export_dir], cwd=REPO,
                                 capture_output=True, text=True, timeout=30)
            if out.returncode == 0 and out.stdout.strip():
                info["last_git_commit"] = out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def _tiny_saved_model() -> str:
    from vae_tf import RunConfig, TrainConfig, VAEConfig, train
    from vae_tf.export.serving import save_serving

    scratch = tempfile.mkdtemp(prefix="bench_serving_load_")
    config = RunConfig(
        model=VAEConfig(architecture="mlp", hidden_units=(256,), latent_dim=16),
        train=TrainConfig(epochs=1, batch_size=128),
    )
    result = train(config, os.path.join(scratch, "run"), verbose=0)
    path = os.path.join(scratch, "serving", "1")
    save_serving(result.model, path)
    return path


def make_requests(loaded, rng: np.random.Generator):
    """(name, callable, check) for each signature, with fixed inputs of batch 1 (4 for sample)."""
    sigs = loaded.signatures
    decode = sigs["serving_default"]
    latent_dim = int(decode.structured_input_signature[1]["z"].shape[-1])
    image_spec = sigs["encode"].structured_input_signature[1]["image"]
    image_shape = tuple(int(s) for s in image_spec.shape[1:])
    z = tf.constant(rng.standard_normal((1, latent_dim)), tf.float32)
    image = tf.constant((rng.random((1, *image_shape)) < 0.3).astype(np.float32))
    conditional = "label" in decode.structured_input_signature[1]
    label = {"label": tf.constant([3], tf.int32)} if conditional else {}

    def check_image(out, n):
        x = out["image"].numpy()
        if x.shape != (n, *image_shape) or not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise ValueError(f"bad image output {x.shape}")

    def check_code(out, n):
        m, s = out["z_mean"].numpy(), out["z_stddev"].numpy()
        if m.shape != (n, latent_dim) or s.shape != (n, latent_dim) or not (np.isfinite(m).all() and (s > 0).all()):
            raise ValueError(f"bad code output {m.shape} {s.shape}")

    return [
        ("serving_default", lambda: decode(z=z, **label), lambda o: check_image(o, 1)),
        ("sample", lambda: sigs["sample"](num_samples=tf.constant(4), seed=tf.constant(7), **label),
         lambda o: check_image(o, 4)),
        ("encode", lambda: sigs["encode"](image=image, **label), lambda o: check_code(o, 1)),
        ("reconstruct", lambda: sigs["reconstruct"](image=image, **label), lambda o: check_image(o, 1)),
    ], latent_dim


def percentile_ms(values, q):
    return float(np.percentile(np.asarray(values) * 1e3, q)) if values else None


def run(args) -> dict:
    saved_model, source = find_saved_model(args.saved_model)
    rss_before_load = rss_mb()
    loaded = tf.saved_model.load(saved_model)
    requests, latent_dim = make_requests(loaded, np.random.default_rng(0))

    # Warm-up: trace/compile every signature from several threads.
    load_warmup = {"load_before": load_average()}
    with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(lambda i: requests[i % len(requests)][1](), range(args.warmup)))
    load_warmup["load_after"] = load_average()
    rss_warm = rss_mb()

    latencies = {name: [] for name, _, _ in requests}
    errors: list[str] = []
    lock = threading.Lock()
    rss_samples: list[tuple[int, float]] = []
    done = [0]

    def one(i):
        name, call, check = requests[i % len(requests)]
        start = time.perf_counter()
        try:
            check(call())
        except Exception as err:  # noqa: BLE001 -- every failure is counted and reported
            with lock:
                errors.append(f"{name}: {type(err).__name__}: {err}")
            return
        elapsed = time.perf_counter() - start
        with lock:
            latencies[name].append(elapsed)
            done[0] += 1
            if done[0] % max(1, args.requests // 10) == 0:
                rss_samples.append((done[0], rss_mb()))

    load_before = load_average()
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
        for future in [pool.submit(one, i) for i in range(args.requests)]:
            future.result()
    wall = time.perf_counter() - start
    load_after = load_average()
    rss_end = rss_mb()

    every = [v for values in latencies.values() for v in values]
    middle = min(rss_samples, key=lambda s: abs(s[0] - args.requests / 2))[1] if rss_samples else None
    return {
        "benchmark": "serving_load",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "saved_model": os.path.relpath(saved_model, REPO) if saved_model.startswith(REPO) else saved_model,
        "source": source,
        "model_info": model_info(saved_model),
        "latent_dim": latent_dim,
        "tensorflow": tf.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU"
        if not tf.config.list_physical_devices("GPU") else f"{platform.machine()}, GPU",
        "load_before": load_before,
        "load_after": load_after,
        "warmup_load": load_warmup,
        "threads": args.threads,
        "requests": args.requests,
        "warmup_requests": args.warmup,
        "completed": len(every),
        "errors": len(errors),
        "error_examples": errors[:5],
        "seconds": wall,
        "requests_per_second": len(every) / wall,
        "latency_ms": {"p50": percentile_ms(every, 50), "p99": percentile_ms(every, 99),
                       "max": percentile_ms(every, 100)},
        "latency_ms_by_signature": {
            name: {"count": len(v), "p50": percentile_ms(v, 50), "p99": percentile_ms(v, 99)}
            for name, v in latencies.items()
        },
        "rss_mb": {"before_load": rss_before_load, "after_warmup": rss_warm, "middle": middle, "end": rss_end,
                   "samples": [{"requests": n, "rss_mb": r} for n, r in rss_samples]},
        "rss_growth_mb": rss_end - rss_warm,
        "rss_growth_after_first_tenth_mb": rss_end - rss_samples[0][1] if rss_samples else None,
        "rss_slack_mb": args.rss_slack_mb,
        "memory_flat": rss_end - rss_warm <= args.rss_slack_mb,
    }


def _triplet(values) -> str:
    return "not recorded" if not values else "/".join(f"{v:.2f}" for v in values)


def _model_line(info: dict) -> str:
    if not info:
        return "No manifest.json next to it (not an export directory's serving/<version>)."
    keys = [("created", "created"), ("producer", "by"), ("commit", "commit"), ("git_commit", "commit"),
            ("run_dir", "from run"), ("serving_version", "serving version"), ("architecture", "architecture"),
            ("hidden_units", "hidden units"), ("prior", "prior"), ("last_git_commit", "last git commit touching it")]
    parts = [f"{label} {info[key]}" for key, label in keys if info.get(key) not in (None, "")]
    return f"Model ({info.get('manifest', 'manifest')}): " + ", ".join(parts) + "."


def write_markdown(result: dict, path: str) -> None:
    lat, rss = result["latency_ms"], result["rss_mb"]
    lines = [
        "# Serving load on the exported SavedModel",
        "",
        f"{result['date']}, TensorFlow {result['tensorflow']}, {result['machine']}. Machine load averages "
        f"(1/5/15 min) before -> after the timed requests: {_triplet(result.get('load_before'))} -> "
        f"{_triplet(result.get('load_after'))} (warm-up: {_triplet((result.get('warmup_load') or {}).get('load_before'))}"
        f" -> {_triplet((result.get('warmup_load') or {}).get('load_after'))}).",
        _model_line(result.get("model_info") or {}),
        f"SavedModel: `{result['saved_model']}` ({result['source']}), loaded in-process with "
        "`tf.saved_model.load`; requests cycle over `serving_default` (1 latent), `sample` (4 images), "
        f"`encode` and `reconstruct` (1 image each) from {result['threads']} threads.",
        "",
        "| requests | errors | requests/s | p50 ms | p99 ms | max ms |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {result['completed']:,} | {result['errors']} | {result['requests_per_second']:.0f} | "
        f"{lat['p50']:.2f} | {lat['p99']:.2f} | {lat['max']:.1f} |",
        "",
        "| signature | requests | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
    ]
    for name, s in result["latency_ms_by_signature"].items():
        lines.append(f"| `{name}` | {s['count']:,} | {s['p50']:.2f} | {s['p99']:.2f} |")
    lines += [
        "",
        f"Resident memory: {rss['before_load']:.0f} MiB before loading, {rss['after_warmup']:.0f} MiB after "
        f"warm-up, {rss['middle']:.0f} MiB at the middle, {rss['end']:.0f} MiB at the end "
        f"(growth {result['rss_growth_mb']:+.1f} MiB since warm-up, "
        f"{result['rss_growth_after_first_tenth_mb']:+.2f} MiB from the first tenth of the requests to the end; "
        f"flat = within {result['rss_slack_mb']:.0f} MiB of the warm-up level: "
        f"{'yes' if result['memory_flat'] else 'NO'}).",
        "",
        "Reproduce: `python benchmarks/bench_serving_load.py` (the packaged model; latencies depend on the "
        "machine's load, measured above).",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--saved-model", help="an exported model dir (DIR/serving/<v>/) or a SavedModel dir")
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--rss-slack-mb", type=float, default=50.0)
    p.add_argument("--out", default=os.path.join(HERE, "serving_load.json"))
    args = p.parse_args(argv)
    result = run(args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    write_markdown(result, os.path.splitext(args.out)[0] + ".md")
    print(json.dumps({k: result[k] for k in ("completed", "errors", "requests_per_second", "latency_ms",
                                             "rss_growth_mb", "memory_flat")}))
    return 0 if result["errors"] == 0 and result["memory_flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
