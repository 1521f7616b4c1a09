"""Memory and speed of the folder source (`--data images:DIR`) as the folder grows.

    python benchmarks/bench_data.py                       # 10k and 100k images, about 30 minutes
    python benchmarks/bench_data.py --sizes 1000,5000 --speed-epochs 2   # a quick check

Writes generated folders of 64x64 RGB PNGs (a random ellipse on a two-colour gradient,
with Gaussian noise of std 6 grey levels so that files are as hard to compress and
decode as small photos: about 12 KB each) under --work, then measures, each command in
its own process, alone on the machine:

- memory: peak resident memory (the child's `ru_maxrss`) of
  `vae-tf train --data images:DIR --epochs 1 --no-pictures --cache C` with the
  default model, for every size and C in {memory, none}; the targets compare the
  largest folder with the smallest: at most +1.3 GB with `--cache memory` (the uint8
  pixels of 90,000 more images are 1.1 GB) and at most +0.3 GB with `--cache none`.
- speed: training images/s (median over the epochs after the first, from the run's
  history.json) of `--architecture conv --iwae-samples 1` (one decoder pass per image:
  the lightest conv step, where input costs show most) on the smallest folder, streamed
  (`--cache none`) against cached (`--cache memory`); target: streamed >= 90 %.

Every entry records the machine's load averages before and after it. Results go to
benchmarks/data_results.json and benchmarks/data_results.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from common import load_average, machine  # noqa: E402
from run_all import run_measured  # noqa: E402

GB = 1e9
TARGETS = {"memory_growth_cached_gb": 1.3, "memory_growth_streamed_gb": 0.3, "streamed_over_cached": 0.9}


def _write_chunk(args) -> int:
    from PIL import Image

    folder, start, stop, size = args
    rng = np.random.default_rng(start)
    yy, xx = np.mgrid[:size, :size] / size
    for i in range(start, stop):
        a, b, ink = rng.integers(0, 256, (3, 3))
        t = rng.uniform(0, 1)
        background = a * (1 - (xx * t + yy * (1 - t)))[..., None] + b * (xx * t + yy * (1 - t))[..., None]
        cy, cx, ry, rx = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3), rng.uniform(0.1, 0.3)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        image = np.where(inside[..., None], ink, background) + rng.normal(0, 6, (size, size, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(os.path.join(folder, f"{i:06d}.png"))
    return stop - start


def make_folder(folder: str, n: int, size: int = 64) -> dict:
    """n PNGs in folder/images/ (one flat, unlabelled folder), written once."""
    target = os.path.join(folder, "images")
    done = os.path.join(folder, ".complete")
    if not os.path.exists(done):
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(target)
        chunks = [(target, s, min(s + 2000, n), size) for s in range(0, n, 2000)]
        with ProcessPoolExecutor(os.cpu_count() or 2) as pool:
            written = sum(pool.map(_write_chunk, chunks))
        assert written == n
        open(done, "w").close()
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(target) for f in fs)
    return {"images": n, "bytes_on_disk": total, "path": folder}


def vae_tf_cli() -> list[str]:
    return [sys.executable, "-m", "vae_tf.cli"]


def train_run(work: str, folder: str, name: str, cache: str, extra: list[str]) -> dict:
    run_dir = os.path.join(work, f"run-{name}")
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = vae_tf_cli() + ["train", "--data", f"images:{folder}", "--out", run_dir, "--no-pictures", "--cache", cache, *extra]
    load_before = load_average()
    measured = run_measured(cmd, os.path.join(work, f"{name}.log"))
    load_after = load_average()
    if measured["returncode"] != 0:
        with open(measured["log"]) as f:
            raise RuntimeError(f"{name} failed:\n{f.read()[-3000:]}")
    with open(os.path.join(run_dir, "history.json")) as f:
        history = json.load(f)
    epochs = history["history"].get("epoch_seconds", [])
    return {
        "name": name, "cache": cache, "cmd": measured["cmd"], "wall_seconds": round(measured["wall_seconds"], 1),
        "peak_rss_gb": round(measured["peak_rss_bytes"] / GB, 3), "images_per_second": history["images_per_second"],
        "epoch_seconds": epochs, "split_sizes": history["split_sizes"],
        "load_before": load_before, "load_after": load_after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="folder sizes, smallest first")
    parser.add_argument("--work", default="/tmp/vae-bench-data", help="folders and run directories")
    parser.add_argument("--speed-epochs", type=int, default=3)
    parser.add_argument("--out", default=HERE)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    os.makedirs(args.work, exist_ok=True)

    folders = {n: make_folder(os.path.join(args.work, f"folder-{n}"), n) for n in sizes}
    memory = []
    for n in sizes:
        for cache in ("memory", "none"):
            entry = train_run(args.work, os.path.join(folders[n]["path"], "images"), f"memory-{n}-{cache}", cache, ["--epochs", "1"])
            entry["images"] = n
            memory.append(entry)
            print(f"[memory] {n} images, cache {cache}: peak RSS {entry['peak_rss_gb']:.2f} GB, "
                  f"{entry['wall_seconds']:.0f} s (load {entry['load_before']} -> {entry['load_after']})", flush=True)
    speed = []
    small = os.path.join(folders[sizes[0]]["path"], "images")
    for cache in ("memory", "none"):
        entry = train_run(args.work, small, f"speed-conv-{cache}", cache,
                          ["--architecture", "conv", "--iwae-samples", "1", "--epochs", str(args.speed_epochs)])
        speed.append(entry)
        print(f"[speed] conv, cache {cache}: {entry['images_per_second']:.0f} images/s "
              f"(load {entry['load_before']} -> {entry['load_after']})", flush=True)

    def rss(n, cache):
        return next(e["peak_rss_gb"] for e in memory if e["images"] == n and e["cache"] == cache)

    lo, hi = sizes[0], sizes[-1]
    figures = {
        "memory_growth_cached_gb": round(rss(hi, "memory") - rss(lo, "memory"), 3),
        "memory_growth_streamed_gb": round(rss(hi, "none") - rss(lo, "none"), 3),
        "uint8_pixels_added_gb": round((hi - lo) * 64 * 64 * 3 / GB, 3),
        "streamed_over_cached": round(speed[1]["images_per_second"] / speed[0]["images_per_second"], 3),
    }
    met = {
        "memory_growth_cached_gb": figures["memory_growth_cached_gb"] <= TARGETS["memory_growth_cached_gb"],
        "memory_growth_streamed_gb": figures["memory_growth_streamed_gb"] <= TARGETS["memory_growth_streamed_gb"],
        "streamed_over_cached": figures["streamed_over_cached"] >= TARGETS["streamed_over_cached"],
    }
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    result = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit, "machine": machine(), "command": "python benchmarks/bench_data.py " + " ".join(sys.argv[1:]),
        "folders": list(folders.values()), "memory": memory, "speed": speed, "figures": figures,
        "targets": TARGETS, "met": met,
    }
    with open(os.path.join(args.out, "data_results.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    lines = [
        "# Folder source: memory and streaming speed",
        "",
        f"Command: `{result['command']}` (commit {commit}, {result['created']}). "
        f"Machine: {result['machine'].get('cpu', '')}, {os.cpu_count()} cores. Generated 64x64 RGB PNGs "
        "(an ellipse on a gradient, noise of std 6 grey levels).",
        "",
        "| run | images | cache | peak RSS GB | wall s | images/s | load (1 min) before -> after |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for e in memory + speed:
        n = e.get("images", sizes[0])
        lines.append(f"| {e['name']} | {n:,} | {e['cache']} | {e['peak_rss_gb']:.2f} | {e['wall_seconds']:.0f} | "
                     f"{e['images_per_second']:.0f} | {e['load_before'][0]} -> {e['load_after'][0]} |")
    lines += [
        "",
        "| figure | value | target | met |",
        "| --- | ---: | ---: | --- |",
        f"| peak RSS, {hi:,} minus {lo:,} images, `--cache memory` | {figures['memory_growth_cached_gb']:.2f} GB "
        f"| <= {TARGETS['memory_growth_cached_gb']} GB (the added uint8 pixels: {figures['uint8_pixels_added_gb']:.2f} GB) "
        f"| {'yes' if met['memory_growth_cached_gb'] else 'no'} |",
        f"| peak RSS, {hi:,} minus {lo:,} images, `--cache none` | {figures['memory_growth_streamed_gb']:.2f} GB "
        f"| <= {TARGETS['memory_growth_streamed_gb']} GB | {'yes' if met['memory_growth_streamed_gb'] else 'no'} |",
        f"| conv images/s streamed / cached ({lo:,} images) | {figures['streamed_over_cached']:.2f} "
        f"| >= {TARGETS['streamed_over_cached']} | {'yes' if met['streamed_over_cached'] else 'no'} |",
        "",
    ]
    with open(os.path.join(args.out, "data_results.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
