"""MkDocs hook of the vae-tf site (`hooks:` in mkdocs.yml); nothing here is copied by hand.

- Benchmark results: a line `<!-- benchmark: FILE [VIEW] -->` in a page is replaced by
  tables rendered from `benchmarks/FILE` (a JSON file written by a benchmark script) at
  build time. Every `benchmarks/*.json` that no page names gets a page of its own
  (`results/<name>.md`, added to the nav under "Results"), so a new benchmark's results
  appear on the site without anyone copying them.
- `<!-- cli-reference -->` is replaced by `vae-tf COMMAND --help` of every command, from
  the CLI's own argparse parser (`vae_tf.cli.build_parser`).
- The API reference (mkdocstrings) reads the package as it is installed: `vae_tf`, plus
  the top-level `export/` folder as `vae_tf.export` (setup.cfg's `package_dir`), laid
  out as symlinks in a temporary folder for the build.

The renderers are plain functions of the JSON (tests/test_docs.py calls them).
"""

from __future__ import annotations

import configparser
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

try:
    from mkdocs.plugins import event_priority
except ImportError:  # the renderers are usable (and tested) without mkdocs installed
    def event_priority(priority):
        return lambda fn: fn

log = logging.getLogger("mkdocs.hooks.vae_tf")

# Docstring warnings of griffe (mkdocstrings) that are waiting for a fix in code this
# site does not own, as (file, start of the message): shown as INFO instead of failing
# `mkdocs build --strict`. Remove an entry once its docstring is fixed; any other
# docstring warning fails the build.
PENDING_DOCSTRING_WARNINGS = [
]


class _PendingDocstringWarnings(logging.Filter):
    def filter(self, record):
        if record.levelno == logging.WARNING:
            message = record.getMessage()
            if any(f in message and m in message for f, m in PENDING_DOCSTRING_WARNINGS):
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
MARKER = re.compile(r"^<!--\s*benchmark:\s*(?P<file>[\w./-]+\.json)(?:\s+(?P<view>[\w-]+))?\s*-->\s*$", re.M)
CLI_MARKER = re.compile(r"^<!--\s*cli-reference\s*-->\s*$", re.M)
MANIFEST_MARKER = re.compile(r"^<!--\s*manifest:\s*(?P<path>[\w./-]+manifest\.json)\s*-->\s*$", re.M)
# The pages generated for benchmarks/*.json files that no page names.
GENERATED_DIR = "results"


# ---------------------------------------------------------------------------------------
# Formatting helpers


def _triplet(values) -> str:
    return "not recorded" if not values else "/".join(f"{v:.2f}" for v in values)


def _load(entry: dict | None) -> str:
    entry = entry or {}
    return f"{_triplet(entry.get('load_before'))} -> {_triplet(entry.get('load_after'))}"


def _num(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list], align: list[str] | None = None) -> str:
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_num(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _benchmark_module(name: str):
    """A benchmarks/ module whose Markdown renderer is pure (imports no TensorFlow)."""
    path = BENCHMARKS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_vae_tf_docs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    added = str(BENCHMARKS) not in sys.path
    if added:
        sys.path.insert(0, str(BENCHMARKS))
    try:
        spec.loader.exec_module(module)
    finally:
        if added:
            sys.path.remove(str(BENCHMARKS))
    return module


def _without_title(markdown: str) -> str:
    """Drops a leading `# Title` line (the page has its own)."""
    lines = markdown.lstrip("\n").splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join(lines).strip("\n") + "\n"


# ---------------------------------------------------------------------------------------
# Renderers: one per benchmark JSON (and view); each returns Markdown.


def render_results_headline(r: dict, conditional: dict | None = None) -> str:
    """The reported figures of `run_all.py`: the default and `best` on the test and
    validation slices (and the conditional model of bench_conditional.py)."""
    m = r.get("machine", {})
    rows = []

    def add(name, command, entry, split):
        e = (entry.get("by_split") or {}).get(split) or (entry if entry.get("split") == split else None)
        if not e:
            return
        nll = f"{e['iwae_nll']:.2f}&nbsp;±&nbsp;{e['iwae_nll_stderr']:.2f}"
        elbo = f"{e['neg_elbo']:.2f}&nbsp;±&nbsp;{e['neg_elbo_stderr']:.2f}"
        rows.append([name, command, split, f"**{nll}**" if split == "test" else nll, elbo,
                     f"{e['iwae_bits_per_dim']:.3f}" if e.get("iwae_bits_per_dim") is not None else "-"])

    ev = r.get("evaluate") or {}
    train = (r.get("train") or {}).get("default") or {}
    if ev:
        epochs = train.get("epochs", "?")
        add(f"default ({epochs} epochs, {train.get('wall_seconds', 0):.0f} s)",
            "`vae-tf train --data bundled --out runs/mnist`, then `vae-tf evaluate runs/mnist --split test`", ev, "test")
        add("default", "the same, `--split validation`", ev, "validation")
    best = r.get("best")
    if best:
        add(f"`--preset best` ({best.get('epochs', '?')} epochs, {best.get('train_seconds', 0):.0f} s)",
            "`vae-tf train --data bundled --preset best --out runs/best`", best, "test")
        add("`--preset best`", "the same, `--split validation`", best, "validation")
    if conditional and conditional.get("models"):
        name, c = next(iter(conditional["models"].items()))
        t = c.get("test") or {}
        if t:
            rows.append(["conditional default, -log p(x\\|y)", f"`{c.get('command')}`", "test",
                         f"**{t['iwae_nll']:.2f}&nbsp;±&nbsp;{t['iwae_nll_stderr']:.2f}**", f"{t['neg_elbo']:.2f}",
                         f"{t['iwae_bits_per_dim']:.3f}" if t.get("iwae_bits_per_dim") is not None else "-"])
    k = ev.get("iwae_samples", 1000)
    intro = (f"IWAE NLL with k = {k} and -ELBO in nats per image, ± the standard error over the "
             f"{ev.get('num_images', '?')} images; bits/dim = nats / (784 ln 2). Measured "
             f"{m.get('date', '?')} at commit {m.get('commit', '?')} ({m.get('cpu', '?')}, {m.get('cores', '?')} "
             f"cores, TensorFlow {m.get('tensorflow', '?')}).\n\n")
    return intro + _table(["model", "command", "split", "IWAE NLL", "-ELBO", "bits/dim"], rows,
                          ["---", "---", "---", "---:", "---:", "---:"])


def render_results(r: dict) -> str:
    """Everything in a `run_all.py` results file, by the benchmark's own renderer
    (benchmarks/report.py, which `run_all.py --commit-results` also writes results.md with)."""
    return _without_title(_benchmark_module("report").markdown(r))


def render_conditional(r: dict) -> str:
    """bench_conditional.py: agreement of an independent classifier with the requested digit."""
    m, c, s = r.get("machine", {}), r.get("classifier", {}), r.get("splits", {})
    out = []
    if r.get("quick"):
        out.append("**Smoke test (`--quick`): not a result.**\n")
    out.append(f"{m.get('date', '')}, {m.get('cpu', '')}, {m.get('cores', '')} cores, TensorFlow "
               f"{m.get('tensorflow', '')}, commit {m.get('commit', '')}. Machine load averages (1/5/15 min) "
               f"before -> after the whole run: {_load(r)}.\n")
    out.append(f"Data: the bundled digits, {s.get('train', 0):,} for training (classifier and models), "
               f"validation slice {s.get('validation')}, test slice {s.get('test')} (`split_seed={s.get('split_seed')}`).\n")
    if c:
        out.append(f"Judge: a CNN ({c.get('architecture')}, {c.get('params', 0):,} parameters, {c.get('epochs')} epochs) "
                   f"trained on the {c.get('num_train_images', 0):,} training digits only: "
                   f"**{c.get('test_accuracy', 0):.1%}** accuracy on the {c.get('num_test_images')} test digits "
                   f"(load {_load(c)}).\n")
    out.append(f"Agreement: the share of `model.sample(n, seed, label=d)` mean images the judge assigns to d; "
               f"-log p(x|y): IWAE with k = {r.get('iwae_samples')} on the test and validation slices, nats; "
               f"-log p(x): the label summed out (uniform p(y)), k / classes samples per label, test slice.\n")
    rows = []
    for name, e in (r.get("models") or {}).items():
        t, v = e.get("test") or {}, e.get("validation") or {}
        rows.append([f"{name} (`{e.get('command')}`)", e.get("num_train_images"), f"**{e.get('agreement', 0):.1%}**",
                     t.get("iwae_nll"), t.get("iwae_nll_stderr"), (e.get("test_marginal") or {}).get("nll"),
                     t.get("neg_elbo"), v.get("iwae_nll"),
                     f"{e.get('train_seconds', 0):.0f}", _load(e.get("train_load"))])
    out.append(_table(["model (command)", "train images", "agreement", "test -log p(x\\|y)", "± se", "test -log p(x)",
                       "test -ELBO", "validation -log p(x\\|y)", "train s", "load during training (1/5/15 min)"], rows,
                      ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---"]))
    models = r.get("models") or {}
    if models:
        first = next(iter(models.values()))
        digits = list(first.get("agreement_per_digit", {}))
        out.append(f"Agreement per requested digit ({first.get('samples_per_digit')} samples each):\n")
        out.append(_table(["model", *digits],
                          [[name, *(f"{e['agreement_per_digit'][d]:.0%}" for d in digits)] for name, e in models.items()],
                          ["---"] + ["---:"] * len(digits)))
    return "\n".join(out)


def render_export(r: dict) -> str:
    """bench_export.py: decoder latency of each runtime on an export."""
    cfg, m = r.get("config", {}), r.get("machine", {})
    cores = m.get("cores", "?")
    batch = r.get("tflite_batch")
    out = [f"Decoder of `{r.get('model')}` ({cfg.get('architecture')}, latent {cfg.get('latent_dim')}): "
           f"{r.get('decoder_macs_per_image', 0):,} multiply-accumulates per image. {m.get('cpu')}, {cores} cores, "
           f"1 thread per runtime (and {cores} at batch 1 where shown), median of {r.get('runs')} calls (batch 64: "
           f"{r.get('batch64_runs')}), the lowest of {r.get('windows')} back-to-back windows, {r.get('date')}; "
           f"TensorFlow {(r.get('software') or {}).get('tensorflow', '?')}. TFLite batch: "
           f"{'open' if batch is None else f'fixed at {batch}'}. Machine load averages (1/5/15 min) before -> after "
           f"all timings: {_load(r)}." + (f" {m['note']}." if m.get("note") else "") + "\n",
           "Batch 1 through `vae_tf.export`'s decoders (input checks included), and as the runtime's own call on "
           "prepared inputs (`runner(**feed)` / `session.run`), which is what an app linking the runtime pays.\n"]
    rows = []
    for row in r.get("results", []):
        ms = lambda k: "-" if row.get(k) is None else f"{row[k]:.3f}"  # noqa: E731
        rows.append([row.get("runtime"), row.get("artifact"), f"{row.get('size_bytes', 0) / 1024:,.0f} KiB",
                     ms("batch1_ms"), ms("batch1_ms_all_cores"), ms("batch1_ms_runtime"),
                     ms("batch1_ms_runtime_all_cores"), ms("batch64_ms"),
                     "-" if row.get("batch64_us_per_image") is None else f"{row['batch64_us_per_image']:.1f}",
                     _load(row)])
    out.append(_table(["runtime", "artifact", "size", "batch 1 (ms)", f"batch 1, {cores} threads (ms)",
                       "batch 1, runtime call (ms)", f"batch 1, runtime call, {cores} threads (ms)", "batch 64 (ms)",
                       "batch 64 (µs/image)", "load before -> after (1/5/15 min)"], rows,
                      ["---", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---"]))
    return "\n".join(out)


def render_serving_load(r: dict) -> str:
    """bench_serving_load.py: many requests from a pool of threads on the SavedModel."""
    lat, rss = r.get("latency_ms", {}), r.get("rss_mb", {})
    info = r.get("model_info") or {}
    model = ", ".join(f"{label} {info[key]}" for key, label in
                      [("created", "created"), ("producer", "by"), ("serving_version", "serving version"),
                       ("architecture", "architecture"), ("hidden_units", "hidden units"), ("prior", "prior"),
                       ("last_git_commit", "last git commit touching it")] if info.get(key) not in (None, ""))
    out = [f"{r.get('date')}, TensorFlow {r.get('tensorflow')}, {r.get('machine')}. Machine load averages "
           f"(1/5/15 min) before -> after the timed requests: {_load(r)} (warm-up: {_load(r.get('warmup_load'))}).\n",
           f"SavedModel `{r.get('saved_model')}`" + (f" ({model})" if model else "") + ", loaded in-process with "
           f"`tf.saved_model.load`; {r.get('warmup_requests', 0):,} warm-up requests, then {r.get('requests', 0):,} "
           f"requests cycling over `serving_default` (1 latent), `sample` (4 images), `encode` and `reconstruct` "
           f"(1 image each) from {r.get('threads')} threads; every response is checked.\n",
           _table(["requests", "errors", "requests/s", "p50 ms", "p99 ms", "max ms"],
                  [[r.get("completed"), r.get("errors"), f"{r.get('requests_per_second', 0):,.0f}",
                    lat.get("p50"), lat.get("p99"), _num(lat.get("max"), 1)]], ["---:"] * 6),
           _table(["signature", "requests", "p50 ms", "p99 ms"],
                  [[f"`{name}`", s.get("count"), s.get("p50"), s.get("p99")]
                   for name, s in (r.get("latency_ms_by_signature") or {}).items()], ["---", "---:", "---:", "---:"])]
    if rss:
        out.append(f"Resident memory: {rss.get('before_load', 0):.0f} MiB before loading, "
                   f"{rss.get('after_warmup', 0):.0f} MiB after warm-up, {rss.get('middle', 0):.0f} MiB at the middle, "
                   f"{rss.get('end', 0):.0f} MiB at the end (growth {r.get('rss_growth_mb', 0):+.1f} MiB since "
                   f"warm-up; flat, within {r.get('rss_slack_mb', 0):.0f} MiB of the warm-up level: "
                   f"{'yes' if r.get('memory_flat') else 'NO'}).\n")
    return "\n".join(out)


def render_explorer(r: dict) -> str:
    """bench_explorer.py, by its own renderer."""
    return _without_title(_benchmark_module("bench_explorer").markdown(r))


def render_optimizer(r: dict) -> str:
    """bench_optimizer.py, by its own renderer."""
    return _without_title(_benchmark_module("bench_optimizer").markdown(r))


def render_generic(r) -> str:
    """Any other benchmark JSON: its scalar fields, and its lists of records as tables."""
    scalars, tables = [], []

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            keys = [k for k in value[0] if not isinstance(value[0][k], (dict, list))]
            tables.append((prefix, _table([f"`{k}`" for k in keys], [[x.get(k) for k in keys] for x in value])))
        elif isinstance(value, list):
            scalars.append([f"`{prefix}`", ", ".join(_num(x) for x in value) if len(value) <= 12 else f"{len(value)} values"])
        else:
            scalars.append([f"`{prefix}`", _num(value, 4)])

    walk("", r)
    out = [_table(["field", "value"], scalars)] if scalars else []
    out += [f"**`{name}`**\n\n{table}" for name, table in tables]
    return "\n".join(out)


# file name (relative to benchmarks/) and view -> (renderer, extra files it reads)
RENDERERS = {
    ("results.json", None): render_results,
    ("results.json", "headline"): render_results_headline,
    ("conditional.json", None): render_conditional,
    ("export_results.json", None): render_export,
    ("serving_load.json", None): render_serving_load,
    ("explorer_results.json", None): render_explorer,
    ("optimizer.json", None): render_optimizer,
}
# Result files in the run_all.py format (archive/ holds earlier protocols).
RUN_ALL_FILES = re.compile(r"^(results|archive/results-[\w-]+)\.json$")


def read_json(name: str):
    with open(BENCHMARKS / name, encoding="utf-8") as f:
        return json.load(f)


def render(name: str, view: str | None = None) -> str:
    """The Markdown of `benchmarks/<name>` in the given view, with where it came from."""
    path = BENCHMARKS / name
    if not path.exists():
        raise FileNotFoundError(f"benchmarks/{name} does not exist (named by a `<!-- benchmark: ... -->` marker)")
    data = read_json(name)
    if (name, view) in RENDERERS:
        fn = RENDERERS[(name, view)]
    elif view is None and RUN_ALL_FILES.match(name):
        fn = render_results
    elif view is None:
        fn = render_generic
    else:
        raise KeyError(f"no view {view!r} of benchmarks/{name}; views: "
                       f"{sorted(str(v) for n, v in RENDERERS if n == name)}")
    if fn is render_results_headline:
        cond = BENCHMARKS / "conditional.json"
        body = fn(data, read_json("conditional.json") if cond.exists() else None)
    else:
        body = fn(data)
    return body.rstrip("\n") + f"\n\n*Rendered at build time from `benchmarks/{name}`.*\n"


def benchmark_files() -> list[str]:
    """Every benchmark JSON: benchmarks/*.json and benchmarks/archive/*.json."""
    files = sorted(p.relative_to(BENCHMARKS).as_posix() for p in BENCHMARKS.glob("*.json"))
    files += sorted(p.relative_to(BENCHMARKS).as_posix() for p in (BENCHMARKS / "archive").glob("*.json"))
    return files


def named_files(docs_dir: Path) -> set[str]:
    """The benchmark files that some page's marker names."""
    names = set()
    for page in docs_dir.rglob("*.md"):
        names.update(m.group("file") for m in MARKER.finditer(page.read_text(encoding="utf-8")))
    return names


def generated_page(name: str) -> str:
    script = {"data_results.json": "bench_data.py", "explorer_results.json": "bench_explorer.py"}.get(name)
    reproduce = f"\nReproduce: `python benchmarks/{script}`.\n" if script else ""
    return (f"# Benchmark: `{name}`\n\nResults written by a benchmark script into `benchmarks/{name}`; this page is "
            f"generated from that file at build time (no page of the guide names it yet).\n{reproduce}\n"
            f"<!-- benchmark: {name} -->\n")


def generated_path(name: str) -> str:
    return f"{GENERATED_DIR}/{Path(name).stem.replace('_', '-')}.md"


# ---------------------------------------------------------------------------------------
# An export's manifest


def render_manifest(path: str) -> str:
    """The artifacts of an export (`vae-tf export`'s manifest.json): size, tolerance and
    the measured difference from the TF decoder on the reference batch."""
    with open(ROOT / path, encoding="utf-8") as f:
        m = json.load(f)
    rows = []
    for name, a in sorted(m.get("artifacts", {}).items(), key=lambda kv: kv[1].get("tolerance", 0)):
        rows.append([f"`{name}`", a.get("format", "-"), f"{a.get('size_bytes', 0) / 1024:,.0f} KiB",
                     f"{a['tolerance']:g}" if a.get("tolerance") is not None else "-",
                     f"{a['max_abs_diff']:.1e}" if a.get("max_abs_diff") is not None else "-",
                     f"{a['mean_abs_diff']:.1e}" if a.get("mean_abs_diff") is not None else "-"])
    cfg = m.get("config", {}).get("model", m.get("config", {}))
    intro = (f"`{path}`: exported {m.get('created', '?')} by {m.get('producer', '?')} (TensorFlow "
             f"{m.get('tensorflow', '?')}), {cfg.get('architecture', '?')} decoder, latent {m.get('latent_dim', '?')}, "
             f"TFLite batch {'open' if m.get('tflite_batch') is None else m.get('tflite_batch')}.\n\n")
    return intro + _table(["artifact", "format", "size", "tolerance", "max \\|diff\\|", "mean \\|diff\\|"], rows,
                          ["---", "---", "---:", "---:", "---:", "---:"]) + \
        f"\n*Rendered at build time from `{path}`.*\n"


# ---------------------------------------------------------------------------------------
# The CLI reference


def cli_reference() -> str:
    from vae_tf.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        parser = build_parser()
        out = ["## `vae-tf`\n", "```text\n" + parser.format_help().rstrip() + "\n```\n"]
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        for name, p in sub.choices.items():
            out += [f"## `vae-tf {name}`\n", "```text\n" + p.format_help().rstrip() + "\n```\n"]
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# The installed package layout, for mkdocstrings


def stage_package(dest: Path) -> Path:
    """Lays out the packages as setup.cfg installs them (`package_dir`), as symlinks
    under `dest`: `vae_tf/` with the top-level `export/` folder as `vae_tf/export`."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    mapping = {}
    for line in cfg["options"]["package_dir"].strip().splitlines():
        package, _, folder = (part.strip() for part in line.partition("="))
        mapping[package] = ROOT / folder
    for package in sorted(mapping, key=lambda p: p.count(".")):
        target = dest.joinpath(*package.split("."))
        if target.exists() or target.is_symlink():
            continue  # inside a folder already linked
        if "." not in package:
            target.mkdir(parents=True)
            for entry in mapping[package].iterdir():
                if entry.name != "__pycache__":
                    (target / entry.name).symlink_to(entry)
        else:
            target.symlink_to(mapping[package])
    return dest


_STAGE: list[str] = []


# ---------------------------------------------------------------------------------------
# MkDocs events


# Before mkdocstrings' own on_config, which may create the Python handler (and read `paths`).
@event_priority(100)
def on_config(config):
    for name in ("mkdocs.plugins.griffe", "griffe"):
        logging.getLogger(name).addFilter(_PendingDocstringWarnings())
    stage = tempfile.mkdtemp(prefix="vae-tf-docs-api-")
    _STAGE.append(stage)
    stage_package(Path(stage))
    handlers = config.plugins["mkdocstrings"].config.handlers
    handlers.setdefault("python", {})["paths"] = [stage]
    # Pages for benchmark files no page names, appended to the "Results" section.
    docs_dir = Path(config.docs_dir)
    extra = [n for n in benchmark_files() if n not in named_files(docs_dir)]
    config["extra"]["generated_benchmark_pages"] = extra
    if extra:
        for section in config.nav or []:
            if isinstance(section, dict) and "Results" in section:
                section["Results"].extend({n: generated_path(n)} for n in extra)
                break
        else:
            log.warning("mkdocs.yml has no 'Results' section in nav for the generated pages of %s", extra)
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    for name in config["extra"].get("generated_benchmark_pages", []):
        files.append(File.generated(config, generated_path(name), content=generated_page(name)))
    return files


def on_page_markdown(markdown, page, config, files):
    def replace(match):
        try:
            return render(match.group("file"), match.group("view"))
        except (OSError, KeyError, ValueError, TypeError) as err:
            from mkdocs.exceptions import PluginError

            raise PluginError(f"{page.file.src_path}: {match.group(0)}: {err}") from err

    markdown = MARKER.sub(replace, markdown)
    markdown = MANIFEST_MARKER.sub(lambda m: render_manifest(m.group("path")), markdown)
    return CLI_MARKER.sub(lambda _: cli_reference(), markdown)


def on_shutdown():
    while _STAGE:
        shutil.rmtree(_STAGE.pop(), ignore_errors=True)


