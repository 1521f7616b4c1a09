"""Targets (issue 6) checked against a results dict of `run_all.py`, and the Markdown
tables of the results.

Every table names the split its likelihoods are on (its heading, and a "scored on"
column: "test", "validation", "-" for a speed-only figure, "not recorded" for an entry
from before the three-way split) and prints the machine's load averages measured
around the figures (`os.getloadavg()`, 1/5/15 minutes), never a typed-in description.
"""

from __future__ import annotations

import math
import statistics

GB = 1e9
# TensorFlow's fp32 matmul peak on an idle 2-core EPYC of this kind, quoted by issue 6.
NOMINAL_PEAK = 480e9


def _get(d, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _target(name, value, goal, ok, unit="", note=""):
    return {"target": name, "value": value, "goal": goal, "met": ok, "unit": unit, "note": note}


def summarize(r: dict) -> dict:
    """The issue-6 targets: value, goal and whether each is met (None: not measured)."""
    peak = r.get("matmul_peak")
    targets = []
    nll = _get(r, "evaluate", "iwae_nll")
    targets.append(_target(f"default IWAE NLL, {_split_slice(r.get('evaluate'))} (nats)", nll, "<= 93 (issue 15)",
                           None if nll is None else nll <= 93))
    best = _get(r, "best", "iwae_nll")
    targets.append(_target(f"best preset IWAE NLL, {_split_slice(r.get('best'))} (nats)", best, "<= 90 (issue 15)",
                           None if best is None else best <= 90))
    for preset, peer, factor in (("mlp", "pytorch_examples", 1.2), ("conv-small", "keras_io_l16", 1.3)):
        ratios = _get(r, "pairs", preset, "ratios")
        ratio = statistics.median(ratios) if ratios else None
        how = "median of back-to-back rounds"
        if ratio is None:
            ours = _get(r, "train", preset, "images_per_second")
            theirs = _get(r, "peers", peer, "images_per_s")
            ratio = ours / theirs if ours and theirs else None
            how = "one run each"
        note = ""
        theirs = _get(r, "pairs", preset, "peer_images_per_second") or []
        mine = _get(r, "pairs", preset, "ours_images_per_second") or []
        spread = [v for v in (theirs, mine) if v and max(v) > 1.2 * min(v)]
        if spread:
            note = ("not reliable: images/s varied by more than 20% between rounds "
                    f"(peer {min(theirs):,.0f}-{max(theirs):,.0f}, ours {min(mine):,.0f}-{max(mine):,.0f}); "
                    f"{_rounds_load(_get(r, 'pairs', preset, 'round_loads'))}")
        targets.append(_target(f"{preset} images/s / {peer} ({how})", ratio, f">= {factor}",
                               None if ratio is None else ratio >= factor, note=note))
    flops = _get(r, "train", "default", "train_flops_per_second")
    frac = flops / peak if flops and peak else None
    targets.append(_target("default training FLOP/s / matmul peak (this run's)", frac, "report", None))
    targets.append(_target("default training FLOP/s / 480 GFLOP/s (idle peak, issue 6)",
                           flops / NOMINAL_PEAK if flops else None, "report", None))
    eflops = _get(r, "evaluate", "flops_per_second")
    efrac = eflops / peak if eflops and peak else None
    targets.append(_target("evaluate (k=1000) FLOP/s / matmul peak (this run's)", efrac, ">= 0.40",
                           None if efrac is None else efrac >= 0.40))
    enom = eflops / NOMINAL_PEAK if eflops else None
    targets.append(_target("evaluate (k=1000) FLOP/s / 480 GFLOP/s (idle peak, issue 6)", enom, ">= 0.40",
                           None if enom is None else enom >= 0.40))
    for name, e in (r.get("export") or {}).items():
        if not isinstance(e, dict) or "rows" not in e:
            continue
        rows = {row["runtime"]: row for row in e["rows"]}
        for runtime in ("LiteRT float32", "ONNX Runtime"):
            # The runtime's own call where measured (what an app linking it pays); older
            # results have only the call through vae_tf.export's decoders. An app picks
            # its thread count, so the target takes the faster setting; both are noted.
            row = rows.get(runtime, {})
            readings = {
                threads: row.get(key.replace("batch1_ms", "batch1_ms_runtime"), row.get(key))
                for key, threads in (("batch1_ms", "1 thread"), ("batch1_ms_all_cores", "all cores"))
            }
            readings = {k: v for k, v in readings.items() if v is not None}
            ms = min(readings.values()) if readings else None
            note = ", ".join(f"{k} {v:.3f}" for k, v in readings.items())
            targets.append(_target(f"{name} decoder batch-1 latency, {runtime}, faster thread setting (ms)", ms,
                                   "<= 0.15", None if ms is None else ms <= 0.15, note=note))
        ratio = e.get("int8_over_float32_size")
        targets.append(_target(f"{name} int8 / float32 TFLite size", ratio, "<= 0.30",
                               None if ratio is None else ratio <= 0.30))
    erss = _get(r, "evaluate", "peak_rss_bytes")
    targets.append(_target("evaluate peak RSS (GB)", None if erss is None else erss / GB, "<= 4",
                           None if erss is None else erss <= 4 * GB))
    trss = _get(r, "train", "default", "peak_rss_bytes")
    targets.append(_target("train (default) peak RSS (GB)", None if trss is None else trss / GB, "<= 2",
                           None if trss is None else trss <= 2 * GB))
    return {"targets": targets}


def _split_slice(entry) -> str:
    """"test slice", "validation slice" or "split not recorded" for a scored entry."""
    split = entry.get("split") if isinstance(entry, dict) else None
    return f"{split} slice" if split else "split not recorded"


def _split(entry) -> str:
    """The "scored on" cell: the entry's split, "-" for a speed-only entry (split None),
    "not recorded" for an entry written before splits were recorded."""
    if not isinstance(entry, dict) or "split" not in entry:
        return "not recorded"
    return entry["split"] or "-"


def _splits_of(entries) -> str:
    """The splits of `entries` for a heading: "the test slice", "the validation slice",
    or a list when they differ."""
    names = sorted({_split(e) for e in entries if isinstance(e, dict) and _split(e) != "-"})
    if not names:
        return "no likelihoods"
    words = [f"the {n} slice" if n in ("test", "validation") else f"a split {n}" for n in names]
    return " / ".join(words)


def _triplet(values) -> str:
    return "not recorded" if not values else "/".join(f"{v:.2f}" for v in values)


def _load(entry) -> str:
    """"1/5/15-min before -> after" of an entry's load averages."""
    entry = entry if isinstance(entry, dict) else {}
    if not entry.get("load_before") and not entry.get("load_after"):
        return "not recorded"
    return f"{_triplet(entry.get('load_before'))} -> {_triplet(entry.get('load_after'))}"


def _load1(entry) -> str:
    """The 1-minute load average before -> after, for a table cell."""
    entry = entry if isinstance(entry, dict) else {}
    before, after = entry.get("load_before"), entry.get("load_after")
    if not before and not after:
        return "not recorded"
    return f"{before[0]:.2f} -> {after[0]:.2f}" if before and after else f"{_triplet(before)} -> {_triplet(after)}"


def _rounds_load(loads) -> str:
    """The 1-minute load averages measured around back-to-back rounds, as a range."""
    ones = [v[0] for load in (loads or []) if isinstance(load, dict)
            for v in (load.get("load_before"), load.get("load_after")) if v]
    if not ones:
        return "machine load not recorded for these rounds"
    return f"1-min load average {min(ones):.2f}-{max(ones):.2f} around the rounds"


def _stage_load_line(r: dict, stage: str) -> str:
    load = (r.get("stage_load") or {}).get(stage)
    return f"Machine load averages (1/5/15 min) before -> after the stage: {_load(load)}.\n\n"


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1%}"


def _fmt(v, digits=2):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _vs_base_rows(runs: dict, base_name: str, extra: str) -> list[tuple]:
    """Rows (name, scored on, train images, IWAE NLL, its stderr, difference to
    `base_name`, -ELBO, `extra`, training seconds, 1-min load before -> after) of a stage
    that trains one configuration per row."""
    base = (runs.get(base_name) or {}).get("iwae_nll")
    return [(name, _split(o), o.get("num_train_images"), o.get("iwae_nll"), o.get("iwae_nll_stderr"),
             None if base is None or o.get("iwae_nll") is None else o["iwae_nll"] - base, o.get("neg_elbo"),
             o.get(extra), o.get("train_seconds"), _load1(o)) for name, o in runs.items()]


def _data_line(r: dict) -> str:
    s = r.get("splits")
    if not s:
        return ("Data: the bundled MNIST digits; split sizes not recorded in these results (each entry's "
                "\"scored on\" column says which split it is on, where recorded).")
    return (f"Data: the bundled MNIST digits, split three ways (`split_seed={s.get('split_seed', 0)}`): "
            f"{s['train']:,} for training (dynamic binarization), a validation slice of {s['validation']} "
            f"(every choice: the options and grid stages) and a test slice of {s['test']} (the reported results: "
            f"the default, `best`, the peers, the conditional model; never used for a choice), both binarized "
            f"once; IWAE with k = 1000.")


def markdown(r: dict) -> str:
    m = r.get("machine", {})
    out = [f"# vae-tf benchmark, {m.get('date', '')}\n",
           f"Machine: {m.get('cpu', '')}, {m.get('cores', '')} cores; TensorFlow {m.get('tensorflow', '')}; "
           f"commit {m.get('commit', '')}. {_data_line(r)}\n"]
    if r.get("matmul_peak"):
        where = "an earlier, merged run" if "peak" in r.get("skipped_stages", []) else "this run"
        loads = r.get("stage_load") or {}
        out.append(f"fp32 matmul peak measured in {where} (4096^3): {r['matmul_peak'] / 1e9:.0f} GFLOP/s "
                   f"(start {r['matmul_peak_start'] / 1e9:.0f}, load {_load(loads.get('peak_start'))}; "
                   f"end {r['matmul_peak_end'] / 1e9:.0f}, load {_load(loads.get('peak_end'))}).\n")

    for stage, src in r.get("merged_from", {}).items():
        out.append(f"\nMerged from an earlier run ({(src.get('machine') or {}).get('date', '?')}, "
                   f"commit {(src.get('machine') or {}).get('commit', '?')}): {stage}.\n")
    if r.get("stage_load"):
        out.append("\n## Machine load around each stage\n\n"
                   "`os.getloadavg()` (1/5/15-minute averages) measured before and after each stage; the machine "
                   f"has {m.get('cores', '?')} cores.\n\n")
        out.append(_table(["stage", "load before", "load after"],
                          [(k, _triplet(v.get("load_before")), _triplet(v.get("load_after")))
                           for k, v in r["stage_load"].items() if isinstance(v, dict)]))
    out.append("\n## Targets (issues 6 and 15)\n\n")
    # Latencies in ms with three decimals (0.148 is not 0.15).
    rows = [(t["target"], _fmt(t["value"], 3) if "(ms)" in t["target"] else t["value"], t["goal"],
             "-" if t["met"] is None else ("met" if t["met"] else "MISSED"), t.get("note", ""))
            for t in r.get("summary", {}).get("targets", [])]
    out.append(_table(["target", "measured", "goal", "", "note"], rows))

    rows, scored = [], []
    for name, t in r.get("train", {}).items():
        ev = r.get("evaluate", {}) if name == "default" else {}
        scored.append(ev)
        rows.append((f"vae-tf {name}", t.get("params"), t.get("images_per_second"), t.get("wall_seconds"),
                     None if not t.get("peak_rss_bytes") else t["peak_rss_bytes"] / GB,
                     t.get("num_train_images"), _split(ev) if ev else "-", ev.get("neg_elbo"), ev.get("iwae_nll"),
                     _get(ev, "by_split", "validation", "iwae_nll"), _load1(t)))
    if "best" in r:
        b = r["best"]
        scored.append(b)
        rows.append(("vae-tf best", b.get("params"), b.get("images_per_second"), b.get("train_seconds"), None,
                     b.get("num_train_images"), _split(b), b.get("neg_elbo"), b.get("iwae_nll"),
                     _get(b, "by_split", "validation", "iwae_nll"), _load1(b)))
    for name, p in r.get("peers", {}).items():
        if not isinstance(p, dict) or "skipped" in p:
            continue
        if p.get("failed"):
            rows.append((f"peer {name} (failed)", None, None, None, None, p.get("num_train_images"), _split(p),
                         None, None, None, _load1(p)))
            continue
        scored.append(p)
        rows.append((f"peer {name}", p.get("params"), p.get("images_per_s"), p.get("train_s"),
                     None if not p.get("peak_rss_bytes") else p["peak_rss_bytes"] / GB, p.get("num_train_images"),
                     _split(p), p.get("neg_elbo_test"), p.get("iwae_nll_k1000_n1000"), None, _load1(p)))
    if rows:
        out.append(f"\n## Training speed and likelihood, same run, same data (likelihoods on {_splits_of(scored)})\n\n")
        out.append("images/s: median over epochs after the first (30 epochs, batch 128 for all but "
                   "tf_cvae's 32); train s: wall time of the whole training command; likelihoods in nats "
                   "on the split named in \"scored on\" (the validation column: the same model on the validation "
                   "slice, where recorded); load: 1-minute load average before -> after the training command "
                   "(the default's likelihoods: the evaluate stage's).\n\n")
        out.append(_table(["model", "params", "images/s", "train s", "peak RSS GB", "train images", "scored on",
                           "-ELBO", "IWAE NLL", "validation IWAE NLL", "load (1 min)"], rows))
        skipped = [f"{n}: {p['skipped']}" for n, p in r.get("peers", {}).items() if isinstance(p, dict) and "skipped" in p]
        if skipped:
            out.append("\n" + "\n".join(f"- peer {s}" for s in skipped) + "\n")

    pairs = {k: v for k, v in r.get("pairs", {}).items() if isinstance(v, dict) and "ratios" in v}
    if pairs:
        out.append("\n## Speed ratios, back to back (pairs stage; speed only, no likelihoods)\n\n")
        out.append(_stage_load_line(r, "pairs"))
        rows = [(f"{k} / {v['peer']}", v.get("num_train_images"),
                 ", ".join(f"{a:.0f}" for a in v["ours_images_per_second"]),
                 ", ".join(f"{a:.0f}" for a in v["peer_images_per_second"]),
                 ", ".join(f"{a:.2f}" for a in v["ratios"]), statistics.median(v["ratios"]), f">= {v['goal']}",
                 ", ".join(_load1(x) for x in v["round_loads"]) if v.get("round_loads") else "not recorded")
                for k, v in pairs.items()]
        out.append(_table(["pair", "train images", "ours images/s", "peer images/s", "ratios (sorted)", "median",
                           "goal", "load per round (1 min, before -> after)"], rows))
    if "evaluate" in r:
        e = r["evaluate"]
        out.append(f"\n## `vae-tf evaluate` (default run, k = {e.get('iwae_samples', 1000)}, timed on "
                   f"{_splits_of([e])})\n\n")
        out.append(_table(["scored on", "images", "IWAE NLL", "validation IWAE NLL", "seconds (eval)",
                           "wall s (process)", "GFLOP", "GFLOP/s", "share of peak", "peak RSS GB",
                           "load (1/5/15 min)"],
                          [(_split(e), e["num_images"], e.get("iwae_nll"), _get(e, "by_split", "validation", "iwae_nll"),
                            e["seconds"], e["wall_seconds"], e["flops"] / 1e9,
                            e["flops_per_second"] / 1e9,
                            e["flops_per_second"] / r["matmul_peak"] if r.get("matmul_peak") else None,
                            e["peak_rss_bytes"] / GB, _load(e))]))

    if r.get("options"):
        out.append("\n## Options (issue 4): default budget (30 epochs, batch 128), IWAE k = 1000 on "
                   f"{_splits_of(r['options'].values())}\n\n")
        out.append(_stage_load_line(r, "options"))
        rows = _vs_base_rows(r["options"], "plain ELBO (base)", "images_per_second")
        out.append("Base: the default MLP with the plain ELBO, the N(0, I) prior and no KL warm-up "
                   "(`OPTIONS_BASE` in run_all.py); each row changes what it names. These figures informed the "
                   "defaults, so they are on the validation slice, not the test slice.\n\n")
        out.append(_table(["option", "scored on", "train images", "IWAE NLL", "± se", "vs base", "-ELBO",
                           "images/s", "train s", "load (1 min)"], rows))

    if r.get("grid"):
        out.append("\n## What each choice buys: one change at a time on the default (30 epochs; each row's batch), "
                   f"IWAE k = 1000 on {_splits_of(r['grid'].values())}\n\n")
        out.append(_stage_load_line(r, "grid"))
        rows = [(*row[:5], (r["grid"][row[0]].get("iwae_bits_per_dim")), *row[5:])
                for row in _vs_base_rows(r["grid"], "default (base)", "params")]
        out.append(_table(["change", "scored on", "train images", "IWAE NLL", "± se", "bits/dim", "vs default",
                           "-ELBO", "params", "train s", "load (1 min)"], rows))

    exp = r.get("export")
    if exp:
        out.append("\n## Decoder latency (benchmarks/bench_export.py on `vae-tf export` of each run)\n\n")
        out.append(_stage_load_line(r, "export"))
        if "skipped" in exp:
            out.append(f"skipped: {exp['skipped']}\n")
        rows = []
        for name, e in exp.items():
            if not isinstance(e, dict) or "rows" not in e:
                continue
            macs, peak = e.get("decoder_macs_per_image"), r.get("matmul_peak")
            for row in e["rows"]:
                us = row.get("batch64_us_per_image")
                share = 2 * macs / (us * 1e-6) / peak if macs and peak and us else None
                rows.append((name, row.get("runtime"), None if row.get("size_bytes") is None else row["size_bytes"] / 1024,
                             row.get("batch1_ms_runtime"), row.get("batch1_ms_runtime_all_cores"),
                             row.get("batch1_ms"), row.get("batch1_ms_all_cores"), us, share, _load1(row)))
            rows.append((name, "int8 / float32 TFLite size", e.get("int8_over_float32_size"), None, None, None, None,
                         None, None, None))
        if rows:
            out.append("Batch 1 as the runtime's own call on prepared inputs (what an app linking LiteRT or ONNX "
                       "Runtime pays; the targets use these), and through `vae_tf.export`'s decoders (input checks "
                       "included). Load: 1-minute load average before -> after the row's timings.\n\n")
            out.append(_table(["model", "runtime", "size KiB", "batch 1 ms, runtime call (1 thread)",
                               "batch 1 ms, runtime call (all cores)", "batch 1 ms via vae_tf (1 thread)",
                               "batch 1 ms via vae_tf (all cores)", "batch 64 µs/image", "batch 64 share of peak",
                               "load (1 min)"], rows))

    cond = r.get("conditional")
    if isinstance(cond, dict) and cond.get("models"):
        c = cond.get("classifier") or {}
        out.append("\n## Conditional generation (benchmarks/bench_conditional.py)\n\n")
        out.append(_stage_load_line(r, "conditional"))
        if cond.get("quick"):
            out.append("**Smoke test (`--quick`): not a result.**\n\n")
        out.append(f"Judge: a CNN trained on the {c.get('num_train_images', '?')} training digits only, "
                   f"{_pct(c.get('test_accuracy'))} accuracy on the {_split_slice(c)}. Agreement: share of "
                   f"{next(iter(cond['models'].values())).get('samples_per_digit', '?')} samples per requested digit "
                   f"the judge assigns to that digit; -log p(x|y): IWAE k = {cond.get('iwae_samples', '?')}.\n\n")
        rows = [(name, f"`{e.get('command')}`", e.get("num_train_images"), _pct(e.get("agreement")), _split(e),
                 _get(e, "test", "iwae_nll"), _get(e, "validation", "iwae_nll"), _load1(e.get("train_load")))
                for name, e in cond["models"].items()]
        out.append(_table(["model", "command", "train images", "agreement", "scored on", "test -log p(x\\|y)",
                           "validation -log p(x\\|y)", "load during training (1 min)"], rows))
    elif isinstance(cond, dict) and cond.get("failed"):
        out.append("\n## Conditional generation\n\nfailed: see " + str(cond.get("log")) + "\n")
    if r.get("total_seconds", 0) > 60:
        out.append(f"\nTotal benchmark time: {r['total_seconds'] / 60:.1f} min.\n")
    return "".join(out)
