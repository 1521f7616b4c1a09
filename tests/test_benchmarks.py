"""The benchmark's bookkeeping (benchmarks/run_all.py and report.py), without running
any benchmark: merged pair rounds and the decoder-latency targets."""

from __future__ import annotations

import importlib
import os
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, BENCHMARKS)
    try:
        yield importlib.import_module("run_all"), importlib.import_module("report")
    finally:
        sys.path.remove(BENCHMARKS)


def _pair(ours, theirs, peer="pytorch_examples"):
    return {"peer": peer, "goal": 1.2, "ours_images_per_second": ours, "peer_images_per_second": theirs,
            "ratios": sorted(a / b for a, b in zip(ours, theirs)), "median_ratio": None}


def test_merged_pair_rounds_give_one_median_over_all_rounds(bench):
    run_all, _ = bench
    pairs = {"mlp": _pair([30.0, 36.0], [20.0, 30.0]), "conv-small": {"skipped": "no peer"}}
    earlier = {"mlp": _pair([10.0], [10.0]), "conv-small": _pair([1.0], [1.0], "keras_io_l16")}
    assert run_all._add_pair_rounds(pairs, earlier) == ["mlp"]
    mlp = pairs["mlp"]
    assert mlp["ours_images_per_second"] == [10.0, 30.0, 36.0]
    assert mlp["ratios"] == [1.0, 1.2, 1.5] and mlp["median_ratio"] == 1.2
    assert pairs["conv-small"] == {"skipped": "no peer"}  # nothing to add to a skipped pair
    other_peer = {"mlp": _pair([5.0], [1.0], peer="someone_else")}
    assert run_all._add_pair_rounds(pairs, other_peer) == []  # rounds against another peer stay apart


def test_latency_targets_use_the_runtime_call_where_measured(bench):
    """The latency target takes the runtime's own call where measured, at the faster
    of its thread settings, and notes both readings."""
    _, report = bench
    rows = [
        {"runtime": "LiteRT float32", "batch1_ms": 0.16, "batch1_ms_all_cores": 0.13,
         "batch1_ms_runtime": 0.149, "batch1_ms_runtime_all_cores": 0.22},
        {"runtime": "ONNX Runtime", "batch1_ms": 0.17, "batch1_ms_all_cores": 0.16},  # an older result
    ]
    results = {"export": {"conv-small": {"rows": rows, "int8_over_float32_size": 0.29}}}
    targets = {t["target"]: t for t in report.summarize(results)["targets"]}
    litert = targets["conv-small decoder batch-1 latency, LiteRT float32, faster thread setting (ms)"]
    assert litert["value"] == 0.149 and litert["met"] is True
    assert litert["note"] == "1 thread 0.149, all cores 0.220"
    onnx = targets["conv-small decoder batch-1 latency, ONNX Runtime, faster thread setting (ms)"]
    assert onnx["value"] == 0.16 and onnx["met"] is False


def test_report_says_where_the_matmul_peak_came_from(bench):
    _, report = bench
    r = {"machine": {}, "matmul_peak": 2e11, "matmul_peak_start": 2e11, "matmul_peak_end": 2e11}
    assert "peak measured in this run" in report.markdown({**r, "skipped_stages": []})
    assert "peak measured in an earlier, merged run" in report.markdown({**r, "skipped_stages": ["peak"]})


def test_merging_a_merged_file_keeps_every_source(bench):
    """A stage copied from a file that had itself merged parts of that stage keeps both
    sources; a stage that file had copied whole keeps the original one."""
    run_all, _ = bench
    a = {"machine": {"commit": "aaa"}}
    earlier = {
        "machine": {"commit": "bbb"},
        "pairs": {"mlp": _pair([10.0], [10.0])},
        "evaluate": {"nll": 95.0},
        "train": {"default": {}, "mlp": {}},
        "merged_from": {"pairs: the rounds of mlp": a, "evaluate": a},
    }
    results = {"machine": {"commit": "ccc"}, "train": {"default": {}}}
    run_all.merge_earlier(results, earlier, "old.json")
    sources = {k: v["machine"]["commit"] for k, v in results["merged_from"].items()}
    assert sources == {"pairs": "bbb", "pairs: the rounds of mlp": "aaa", "evaluate": "aaa", "train: mlp": "bbb"}
    assert results["pairs"] == earlier["pairs"] and set(results["train"]) == {"default", "mlp"}


def test_pair_rounds_merged_twice_keep_both_sources(bench):
    """Rounds added from a file that had itself added earlier rounds: both sources stay."""
    run_all, _ = bench
    a, b = {"machine": {"commit": "aaa"}}, {"machine": {"commit": "bbb"}}
    earlier = {"machine": {"commit": "bbb"}, "pairs": {"mlp": _pair([10.0, 12.0], [10.0, 10.0])},
               "merged_from": {"pairs": b, "pairs: the rounds of mlp": a}}
    results = {"machine": {"commit": "ccc"}, "pairs": {"mlp": _pair([11.0], [10.0])}}
    run_all.merge_earlier(results, earlier, "old.json", pair_rounds=True)
    assert results["pairs"]["mlp"]["ratios"] == [1.0, 1.1, 1.2]
    sources = {k: v["machine"]["commit"] for k, v in results["merged_from"].items()}
    assert sources == {"pairs: the rounds of mlp": "bbb", "pairs: the rounds of mlp [2]": "aaa"}


# === Splits and machine load (issue 12 section 5) ===

LOAD_A, LOAD_B = [1.25, 0.5, 0.25], [2.75, 1.5, 0.75]


def _scored(split, nll, load=(LOAD_A, LOAD_B), **extra):
    return {"split": split, "num_train_images": 4000, "iwae_nll": nll, "iwae_nll_stderr": 1.1, "neg_elbo": nll + 9,
            "train_seconds": 60.0, "params": 859776, "images_per_second": 4000.0,
            "load_before": load[0], "load_after": load[1], **extra}


def _synthetic_results():
    """A results dict shaped as run_all.py writes it, every stage present."""
    both = {"test": {"iwae_nll": 95.5}, "validation": {"iwae_nll": 95.2}}
    return {
        "machine": {"date": "2026-12-01", "cpu": "CPU", "cores": 2, "tensorflow": "2.21", "commit": "abc"},
        "skipped_stages": [],
        "splits": {"train": 4000, "validation": 500, "test": 500, "split_seed": 0},
        "stage_load": {stage: {"load_before": LOAD_A, "load_after": LOAD_B}
                       for stage in ("peak_start", "train", "evaluate", "pairs", "grid", "options", "export",
                                     "conditional", "peak_end")},
        "matmul_peak": 2e11, "matmul_peak_start": 2e11, "matmul_peak_end": 2e11,
        "train": {"default": {"params": 859776, "images_per_second": 4000.0, "wall_seconds": 60.0,
                              "peak_rss_bytes": 1e9, "split": None, "num_train_images": 4000,
                              "load_before": LOAD_A, "load_after": LOAD_B, "train_flops_per_second": 1e11}},
        "evaluate": {**_scored("test", 95.5), "num_images": 500, "seconds": 4.0, "wall_seconds": 9.0, "flops": 4e11,
                     "flops_per_second": 1e11, "peak_rss_bytes": 1e9, "by_split": both},
        "best": {**_scored("test", 94.5), "by_split": both},
        "peers": {"pytorch_examples": {"split": "test", "num_train_images": 4000, "params": 652824,
                                       "images_per_s": 15000.0, "train_s": 9.0, "neg_elbo_test": 114.0,
                                       "iwae_nll_k1000_n1000": 108.0, "load_before": LOAD_A, "load_after": LOAD_B}},
        # Rounds that vary by more than 20%: the note says so, with the measured load.
        "pairs": {"mlp": {**_pair([20.0, 30.0], [20.0, 20.0]), "split": None, "num_train_images": 4000,
                          "round_loads": [{"load_before": LOAD_A, "load_after": LOAD_B}] * 2}},
        "options": {"plain ELBO (base)": _scored("validation", 102.0), "prior=mog": _scored("validation", 101.5)},
        "grid": {"default (base)": _scored("validation", 95.2),
                 "prior=vamp with 16 pseudo-inputs": _scored("validation", 95.9)},
        "export": {"default": {"rows": [{"runtime": "LiteRT float32", "size_bytes": 1000, "batch1_ms": 0.03,
                                         "batch1_ms_runtime": 0.03, "batch64_us_per_image": 8.0,
                                         "load_before": LOAD_A, "load_after": LOAD_B}],
                               "decoder_macs_per_image": 424192, "int8_over_float32_size": 0.25,
                               "split": None, "load_before": LOAD_A, "load_after": LOAD_B}},
        "conditional": {"iwae_samples": 1000,
                        "classifier": {"num_train_images": 4000, "split": "test", "test_accuracy": 0.97},
                        "models": {"conditional (default: one MoG prior per class)": {
                            "command": "vae-tf train --conditional", "num_train_images": 4000, "agreement": 0.9,
                            "samples_per_digit": 100, "split": "test", "test": {"iwae_nll": 80.0},
                            "validation": {"iwae_nll": 79.5}, "train_load": {"load_before": LOAD_A,
                                                                              "load_after": LOAD_B}}}},
    }


def test_report_names_the_split_of_every_likelihood(bench):
    _, report = bench
    r = _synthetic_results()
    r["summary"] = report.summarize(r)
    md = report.markdown(r)
    targets = {t["target"] for t in r["summary"]["targets"]}
    assert "default IWAE NLL, test slice (nats)" in targets
    assert "best preset IWAE NLL, test slice (nats)" in targets
    assert "4,000 for training" in md and "validation slice of 500" in md and "test slice of 500" in md
    assert "## Training speed and likelihood, same run, same data (likelihoods on the test slice)" in md
    assert "IWAE k = 1000 on the validation slice" in md  # options and grid headings
    for section in md.split("\n## ")[1:]:  # every table with likelihoods has a "scored on" column
        if "IWAE NLL |" in section or "p(x\\|y) |" in section:
            assert "| scored on |" in section, section[:80]
    grid = md.split("## What each choice buys")[1].split("\n## ")[0]
    assert "| prior=vamp with 16 pseudo-inputs | validation | 4,000 |" in grid
    # Entries from before the split was recorded say so rather than guess.
    old = {**r, "grid": {"default (base)": {"iwae_nll": 95.2}}}
    del old["splits"]
    md_old = report.markdown(old)
    assert "split sizes not recorded" in md_old
    assert "| default (base) | not recorded |" in md_old


def test_results_record_split_and_training_images(bench):
    """The stages' entries carry the split and the training-set size; the grid has
    the VampPrior rows the README quotes; the peers get our 4,000 training digits and
    the test slice as we score it."""
    run_all, _ = bench
    common = run_all.common
    sizes = common.split_sizes()
    assert sizes == {"train": 4000, "validation": 500, "test": 500, "split_seed": 0}
    before = run_all.BEFORE_COPIES  # rows measured before the copies keep one unmoved copy
    assert before == {"augment_copies": 1, "augment_shift": 0}
    # the defaults before batch 64 and DReG
    plain, b128 = {"iwae_gradient": "reparam", "iwae_samples": 10, "prior_components": 16}, {
        "batch_size": 128, "augment_copies": 4}
    assert run_all.GRID["prior=vamp with 16 pseudo-inputs"] == (
        {**plain, "prior": "vamp", "prior_components": 16}, {**b128, **before})
    assert run_all.GRID["prior=vamp with 100 pseudo-inputs"] == (
        {**plain, "prior": "vamp", "prior_components": 100}, {**b128, **before})
    assert run_all.GRID["4 copies, shift 1 px (the default)"] == (plain, b128)
    assert run_all.GRID["batch 64, DReG, k=5, 6 copies, 64 prior components (the default)"] == ({}, {})
    assert "conditional" in run_all.STAGES


def test_peer_data_is_our_training_split_and_test_slice(bench, tmp_path):
    import numpy as np

    from vae_tf.data import read_idx

    run_all, _ = bench
    common = run_all.common
    data_dir, npy, sizes = common.write_peer_data(str(tmp_path), "test")
    assert sizes["train"] == 4000
    train = read_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz"))
    assert train.shape == (4000, 28, 28)
    test_images, _ = common.split_images("test")
    np.testing.assert_array_equal(np.load(npy), test_images[..., 0].astype(np.uint8))
    validation_images, _ = common.split_images("validation")
    assert not np.array_equal(validation_images, test_images)


def test_load_averages_are_recorded(bench, monkeypatch):
    run_all, _ = bench
    common = run_all.common
    readings = iter([(1.0, 2.0, 3.0), (4.0, 5.0, 6.0)])
    monkeypatch.setattr(os, "getloadavg", lambda: next(readings))
    with common.recorded_load() as load:
        assert load == {"load_before": [1.0, 2.0, 3.0]}
    assert load == {"load_before": [1.0, 2.0, 3.0], "load_after": [4.0, 5.0, 6.0]}

    def unavailable():
        raise OSError("no load average")

    monkeypatch.setattr(os, "getloadavg", unavailable)
    assert common.load_average() is None


def test_report_prints_the_measured_load(bench):
    _, report = bench
    r = _synthetic_results()
    r["summary"] = report.summarize(r)
    md = report.markdown(r)
    assert "## Machine load around each stage" in md
    assert "| grid | 1.25/0.50/0.25 | 2.75/1.50/0.75 |" in md
    assert md.count("before -> after the stage: 1.25/0.50/0.25 -> 2.75/1.50/0.75") >= 4
    assert "1.25 -> 2.75" in md  # per-row 1-minute load columns
    pairs_note = {t["target"]: t for t in r["summary"]["targets"]}[
        "mlp images/s / pytorch_examples (median of back-to-back rounds)"]["note"]
    assert "1-min load average 1.25-2.75 around the rounds" in pairs_note


def test_no_typed_in_machine_description_in_markdown(bench):
    """The reports print measured load averages, never a word typed into the code."""
    _, report = bench
    sys.path.insert(0, BENCHMARKS)
    try:
        serving = importlib.import_module("bench_serving_load")
        conditional = importlib.import_module("bench_conditional")
    finally:
        sys.path.remove(BENCHMARKS)
    r = _synthetic_results()
    r["summary"] = report.summarize(r)
    texts = [report.markdown(r)]

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        lat = {"p50": 1.0, "p99": 2.0, "max": 3.0}
        serving.write_markdown({
            "date": "2026-12-01", "tensorflow": "2.21", "machine": "x86_64, 2 CPU cores, no GPU",
            "load_before": LOAD_A, "load_after": LOAD_B, "warmup_load": {"load_before": LOAD_A, "load_after": LOAD_B},
            "model_info": {"manifest": "saved_models/mnist_vae/manifest.json", "created": "2026-11-26T11:21:37"},
            "saved_model": "saved_models/mnist_vae/serving/1", "source": "saved_models/mnist_vae", "threads": 8,
            "completed": 10, "errors": 0, "requests_per_second": 100.0, "latency_ms": lat,
            "latency_ms_by_signature": {"sample": {"count": 10, "p50": 1.0, "p99": 2.0}},
            "rss_mb": {"before_load": 1.0, "after_warmup": 2.0, "middle": 2.0, "end": 2.0},
            "rss_growth_mb": 0.0, "rss_growth_after_first_tenth_mb": 0.0, "rss_slack_mb": 50.0, "memory_flat": True,
        }, os.path.join(tmp, "serving.md"))
        cond = {"machine": r["machine"], "splits": r["splits"], "iwae_samples": 1000, "quick": False,
                "load_before": LOAD_A, "load_after": LOAD_B,
                "classifier": {"architecture": "cnn", "params": 1, "epochs": 8, "num_train_images": 4000,
                               "test_accuracy": 0.97, "num_test_images": 500, "load_before": LOAD_A,
                               "load_after": LOAD_B},
                "models": {"m": {"command": "vae-tf train --conditional", "num_train_images": 4000, "agreement": 0.9,
                                 "agreement_per_digit": {str(d): 0.9 for d in range(10)}, "samples_per_digit": 100,
                                 "train_seconds": 60.0, "train_load": {"load_before": LOAD_A, "load_after": LOAD_B},
                                 "test": {"iwae_nll": 80.0, "iwae_nll_stderr": 1.0, "neg_elbo": 88.0},
                                 "test_marginal": {"nll": 82.0, "nll_stderr": 1.0},
                                 "validation": {"iwae_nll": 79.0}}}}
        conditional.write_markdown(cond, os.path.join(tmp, "conditional.md"))
        for name in ("serving.md", "conditional.md"):
            with open(os.path.join(tmp, name)) as f:
                texts.append(f.read())
    assert "1.25/0.50/0.25 -> 2.75/1.50/0.75" in texts[1] and "created 2026-11-26T11:21:37" in texts[1]
    assert "1.25/0.50/0.25 -> 2.75/1.50/0.75" in texts[2] and "test -log p(x\\|y)" in texts[2]
    for text in texts:
        lowered = text.lower()
        for word in ("quiet", "shared", "busy", "idle machine"):
            assert word not in lowered, (word, text[:200])


def test_merge_keeps_stage_load_and_apart_pair_rounds_of_another_split(bench):
    run_all, _ = bench
    earlier = {"machine": {"commit": "bbb"}, "grid": {"default (base)": _scored("validation", 95.2)},
               "stage_load": {"grid": {"load_before": LOAD_A, "load_after": LOAD_B}},
               # Rounds from before the three-way split (4,500 training digits, not recorded).
               "pairs": {"mlp": _pair([10.0], [10.0])}}
    results = {"machine": {"commit": "ccc"}, "stage_load": {},
               "pairs": {"mlp": {**_pair([11.0], [10.0]), "num_train_images": 4000}}}
    run_all.merge_earlier(results, earlier, "old.json", pair_rounds=True)
    assert results["stage_load"]["grid"] == {"load_before": LOAD_A, "load_after": LOAD_B}
    assert results["pairs"]["mlp"]["ours_images_per_second"] == [11.0]  # not mixed with the old rounds


def test_epoch_benchmark_ratios_and_targets():
    """benchmarks/bench_epoch.py: per round, our whole-epoch images/s over the peer's
    training images/s; the median over rounds against 1.2x, the first epoch against
    1.5 s, for every variant."""
    sys.path.insert(0, BENCHMARKS)
    try:
        bench_epoch = importlib.import_module("bench_epoch")
    finally:
        sys.path.remove(BENCHMARKS)

    def ours(whole, first, kernels="TF (oneDNN off)"):
        return {"kernels": kernels, "epoch_images_per_second": whole, "step_images_per_second": whole * 1.05, "overhead_share": 0.05,
                "first_epoch_seconds": first, "launch_to_first_epoch_end_seconds": first + 7, "wall_seconds": 20.0,
                "load_before": [1.0, 1.0, 1.0], "load_after": [1.5, 1.0, 1.0]}

    rounds = [
        {"default": ours(15_000, 1.4), "--jit": ours(18_000, 5.0, "XLA"), "peer": {"images_per_second": 12_000}},
        {"default": ours(13_000, 1.6), "--jit": ours(17_000, 5.2, "XLA"), "peer": {"images_per_second": 13_000}},
        {"default": ours(14_000, 1.3), "--jit": ours(15_000, 4.8, "XLA"), "peer": {"images_per_second": 10_000}},
    ]
    summary = bench_epoch.summarize(rounds, ["default", "--jit"])
    default, jit = summary["default"], summary["--jit"]
    assert default["ratios"] == pytest.approx([1.0, 1.25, 1.4])
    assert default["median_ratio"] == pytest.approx(1.25) and default["ratio_met"]
    assert default["first_epoch_seconds"] == 1.4 and default["first_epoch_met"]
    assert jit["median_ratio"] == pytest.approx(1.5) and not jit["first_epoch_met"]
    assert summary["peer_images_per_second"] == 12_000
    results = {"machine": {"date": "d", "cpu": "c", "cores": 2, "tensorflow": "t", "commit": "x"}, "rounds_run": 3,
               "epochs": None, "num_train_images": 4000, "variants": ["default", "--jit"], "rounds": rounds,
               "summary": summary}
    text = bench_epoch.markdown(results)
    assert ("| default | TF (oneDNN off) | 14,000 | 14,700 | 5.0% | 1.40 | 8.40 | 20.0 | **1.25** (1.00, 1.25, 1.40) |"
            in text)
    assert "| --jit | XLA | 17,000 |" in text
    assert bench_epoch.kernels({"jit_compile": False, "onednn": True}) == "oneDNN"
    assert bench_epoch.kernels({"jit_compile": True, "onednn": False}) == "XLA"
    assert bench_epoch.kernels({}) is None
    assert "- --jit: ratio met (1.50), first epoch not met (5.00 s)" in text
