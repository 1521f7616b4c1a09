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
