"""Targets (issue 6) checked against a results dict of `run_all.py`, and the Markdown
tables of the results."""

from __future__ import annotations

import math

GB = 1e9


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
    targets.append(_target("default IWAE NLL, held-out 500 (nats)", nll, "<= 96",
                           None if nll is None else nll <= 96))
    best = _get(r, "best", "iwae_nll")
    targets.append(_target("best preset IWAE NLL (nats)", best, "report", None))
    for preset, peer, factor in (("mlp", "pytorch_examples", 1.2), ("conv-small", "keras_io_l16", 1.3)):
        ours = _get(r, "train", preset, "images_per_second")
        theirs = _get(r, "peers", peer, "images_per_s")
        ratio = ours / theirs if ours and theirs else None
        targets.append(_target(f"{preset} images/s / {peer}", ratio, f">= {factor}",
                               None if ratio is None else ratio >= factor))
    flops = _get(r, "train", "default", "train_flops_per_second")
    frac = flops / peak if flops and peak else None
    targets.append(_target("default training FLOP/s / matmul peak", frac, "report", None))
    eflops = _get(r, "evaluate", "flops_per_second")
    efrac = eflops / peak if eflops and peak else None
    targets.append(_target("evaluate (k=1000) FLOP/s / matmul peak", efrac, ">= 0.40",
                           None if efrac is None else efrac >= 0.40))
    erss = _get(r, "evaluate", "peak_rss_bytes")
    targets.append(_target("evaluate peak RSS (GB)", None if erss is None else erss / GB, "<= 4",
                           None if erss is None else erss <= 4 * GB))
    trss = _get(r, "train", "default", "peak_rss_bytes")
    targets.append(_target("train (default) peak RSS (GB)", None if trss is None else trss / GB, "<= 2",
                           None if trss is None else trss <= 2 * GB))
    return {"targets": targets}


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


def markdown(r: dict) -> str:
    m = r.get("machine", {})
    out = [f"# vae-tf benchmark, {m.get('date', '')}\n",
           f"Machine: {m.get('cpu', '')}, {m.get('cores', '')} cores; TensorFlow {m.get('tensorflow', '')}; "
           f"commit {m.get('commit', '')}. Data: the bundled 5,000 MNIST digits, 4,500 for training "
           f"(dynamic binarization), 500 held out (`split_seed=0`, binarized once) for the likelihoods; "
           f"IWAE with k = 1000.\n"]
    if r.get("matmul_peak"):
        out.append(f"fp32 matmul peak measured in this run (4096^3): {r['matmul_peak'] / 1e9:.0f} GFLOP/s "
                   f"(start {r['matmul_peak_start'] / 1e9:.0f}, end {r['matmul_peak_end'] / 1e9:.0f}).\n")

    out.append("\n## Targets (issue 6)\n\n")
    rows = [(t["target"], t["value"], t["goal"], "-" if t["met"] is None else ("met" if t["met"] else "MISSED"))
            for t in r.get("summary", {}).get("targets", [])]
    out.append(_table(["target", "measured", "goal", ""], rows))

    rows = []
    for name, t in r.get("train", {}).items():
        ev = r.get("evaluate", {}) if name == "default" else {}
        rows.append((f"vae-tf {name}", t.get("params"), t.get("images_per_second"), t.get("wall_seconds"),
                     None if not t.get("peak_rss_bytes") else t["peak_rss_bytes"] / GB,
                     ev.get("neg_elbo"), ev.get("iwae_nll")))
    if "best" in r:
        b = r["best"]
        rows.append(("vae-tf best", b.get("params"), b.get("images_per_second"), b.get("train_seconds"), None,
                     b.get("neg_elbo"), b.get("iwae_nll")))
    for name, p in r.get("peers", {}).items():
        if not isinstance(p, dict) or "skipped" in p:
            continue
        if p.get("failed"):
            rows.append((f"peer {name} (failed)", None, None, None, None, None, None))
            continue
        rows.append((f"peer {name}", p.get("params"), p.get("images_per_s"), p.get("train_s"),
                     None if not p.get("peak_rss_bytes") else p["peak_rss_bytes"] / GB,
                     p.get("neg_elbo_test"), p.get("iwae_nll_k1000_n1000")))
    if rows:
        out.append("\n## Training speed and likelihood, same run, same data\n\n")
        out.append("images/s: median over epochs after the first (30 epochs, batch 128 for all but "
                   "tf_cvae's 32); train s: wall time of the whole training command; likelihoods in nats "
                   "on the 500 held-out digits.\n\n")
        out.append(_table(["model", "params", "images/s", "train s", "peak RSS GB", "test -ELBO", "IWAE NLL"], rows))
        skipped = [f"{n}: {p['skipped']}" for n, p in r.get("peers", {}).items() if isinstance(p, dict) and "skipped" in p]
        if skipped:
            out.append("\n" + "\n".join(f"- peer {s}" for s in skipped) + "\n")

    if "evaluate" in r:
        e = r["evaluate"]
        out.append("\n## `vae-tf evaluate` (default run, k = 1000)\n\n")
        out.append(_table(["images", "seconds (eval)", "wall s (process)", "GFLOP", "GFLOP/s", "share of peak",
                           "peak RSS GB"],
                          [(e["num_images"], e["seconds"], e["wall_seconds"], e["flops"] / 1e9,
                            e["flops_per_second"] / 1e9,
                            e["flops_per_second"] / r["matmul_peak"] if r.get("matmul_peak") else None,
                            e["peak_rss_bytes"] / GB)]))

    if r.get("options"):
        out.append("\n## Options (issue 4): default budget (30 epochs, batch 128), one change each\n\n")
        base = _get(r, "options", "default", "iwae_nll")
        rows = [(name, o["iwae_nll"], o["iwae_nll_stderr"],
                 None if base is None else o["iwae_nll"] - base, o["neg_elbo"], o["images_per_second"],
                 o["train_seconds"]) for name, o in r["options"].items()]
        out.append(_table(["option", "IWAE NLL", "± se", "vs default", "test -ELBO", "images/s", "train s"], rows))

    exp = r.get("export")
    if exp:
        out.append("\n## Export (decoder latency)\n\n")
        if "skipped" in exp:
            out.append(f"skipped: {exp['skipped']}\n")
        else:
            for name, e in exp.items():
                out.append(f"- {name}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in e.items()
                                                     if k not in ("cmd", "log")) + "\n")
    out.append(f"\nTotal benchmark time: {r.get('total_seconds', 0) / 60:.1f} min.\n")
    return "".join(out)
