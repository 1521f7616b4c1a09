"""The in-browser explorer.

- `explorer.json`, written by the export: principal directions of held-out codes, the
  span the pad covers, example codes and the model's own prior as plain data (checked
  against the model: its codes, and the prior's log-density).
- `vae-tf explore`: the checks before serving and their errors (no decoder.onnx, a
  corrupt file, no build or an incomplete one).
- The page in real headless Chromium (marker `browser`; skipped only where no Chromium
  is installed): `window.vae.decode` through onnxruntime-web and LiteRT.js against the
  Python runtimes, the pad, sliders, samples, interpolation, the runtime switch, the
  label picker of a trained conditional model, a phone-width viewport, and the failures
  a person can meet (each shown on the page, never a blank page).
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGED = os.path.join(REPO, "saved_models", "mnist_vae")
DECODER_FILES = ("decoder.onnx", "decoder_float32.tflite", "decoder_float16.tflite", "decoder_dynamic_int8.tflite",
                 "decoder_int8.tflite")
RUNTIME_FILES = {"onnx": "decoder.onnx", "litert": "decoder_float32.tflite", "litert-int8": "decoder_int8.tflite",
                 "litert-float16": "decoder_float16.tflite", "litert-dynamic-int8": "decoder_dynamic_int8.tflite"}


def _find_chromium() -> str | None:
    for candidate in (os.environ.get("VAE_TF_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                      "/usr/bin/chromium"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


CHROMIUM = _find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium installed (apt-get install chromium, or set VAE_TF_CHROMIUM)"
)


def browser(test):
    """Marks a test that drives the page in headless Chromium."""
    return pytest.mark.browser(needs_chromium(test))


# --- explorer.json ------------------------------------------------------------------------


def _mixture_log_prob(params: dict, z: np.ndarray, label: int | None) -> np.ndarray:
    """log p(z) [N] of the prior described by `prior_parameters`, in numpy."""
    d = z.shape[-1]
    if params["type"] == "normal":
        return -0.5 * np.sum(z**2, -1) - 0.5 * d * np.log(2 * np.pi)
    pick = (lambda x: np.asarray(x)[label]) if params["per_class"] else np.asarray
    log_w, loc = pick(params["log_weights"]), pick(params["loc"])
    if "scale_diag" in params:
        scale = pick(params["scale_diag"])
        u = (z[:, None, :] - loc[None]) / scale[None]
        log_det = np.sum(np.log(scale), -1)
    else:
        tril = pick(params["scale_tril"])
        u = np.stack([np.linalg.solve(t, (z - m).T).T for t, m in zip(tril, loc)], axis=1)
        log_det = np.sum(np.log(np.abs(np.diagonal(tril, axis1=-2, axis2=-1))), -1)
    log_normal = -0.5 * np.sum(u**2, -1) - log_det - 0.5 * d * np.log(2 * np.pi)
    return np.logaddexp.reduce(log_normal + log_w, axis=-1)


@pytest.mark.parametrize(
    "changes",
    [{}, {"prior": "normal"}, {"conditional": True}, {"prior": "vamp", "prior_components": 5},
     {"prior": "vamp", "prior_components": 3, "posterior": "full"}],
    ids=["default", "normal", "conditional", "vamp", "vamp-full-posterior"],
)
def test_prior_parameters_give_the_models_prior(changes):
    """The prior the page samples is the model's: the same log-density everywhere."""
    import tensorflow as tf

    from vae_tf import VAE, VAEConfig
    from vae_tf.export.explorer import prior_parameters

    model = VAE(VAEConfig(**changes))
    x = tf.zeros([1, *model.config.image_shape])
    model((x, tf.constant([0])) if model.config.conditional else x)  # builds every weight
    params = json.loads(json.dumps(prior_parameters(model)))  # as the page reads it
    z = np.random.default_rng(0).normal(scale=2.0, size=(64, model.config.latent_dim)).astype(np.float32)
    labels = [3, 7] if model.config.conditional else [None]
    for label in labels:
        prior = model.prior(tf.fill([len(z)], label)) if label is not None and params.get("per_class") else model.prior()
        expected = prior.log_prob(z).numpy()
        np.testing.assert_allclose(_mixture_log_prob(params, z.astype(np.float64), label), expected, rtol=1e-4, atol=1e-3)
    if changes.get("posterior") == "full":
        assert "scale_tril" in params
    if model.config.conditional:
        assert params["per_class"] and np.asarray(params["loc"]).shape[0] == model.config.num_classes


def test_export_writes_explorer_json_of_held_out_codes(exported, tiny_model, tiny_run):
    """explorer.json: listed in the manifest, and its PCA, span, points and examples are
    those of the model's codes of the run's held-out images."""
    from vae_tf import RunConfig
    from vae_tf.export import pipeline
    from vae_tf.export.explorer import heldout_images

    out, manifest = exported
    path = os.path.join(out, "explorer.json")
    entry = manifest["explorer"]
    assert entry["path"] == "explorer.json" and entry["size_bytes"] == os.path.getsize(path)
    assert entry["sha256"] == pipeline.sha256_file(path)
    with open(path) as f:
        e = json.load(f)
    images, labels, split = heldout_images(RunConfig.load(os.path.join(tiny_run, "config.json")))
    assert e["source"] == {**e["source"], "split": split, "num_images": len(images), "data": "bundled"}
    codes = tiny_model.encode_mean(images).numpy().astype(np.float64)
    pca = e["pca"]
    directions, mean = np.asarray(pca["directions"]), np.asarray(pca["mean"])
    np.testing.assert_allclose(mean, codes.mean(0), atol=1e-5)
    np.testing.assert_allclose(directions @ directions.T, np.eye(len(directions)), atol=1e-5)
    projected = (codes - mean) @ directions.T
    stddev = projected.std(0, ddof=1)
    np.testing.assert_allclose(pca["stddev"], stddev, rtol=1e-4)
    assert np.all(np.diff(stddev) <= 1e-6), "directions are not sorted by variance"
    # The first direction is the one of largest variance: no unit vector does better.
    random_dirs = np.random.default_rng(0).standard_normal((200, codes.shape[1]))
    random_dirs /= np.linalg.norm(random_dirs, axis=1, keepdims=True)
    assert np.max(((codes - mean) @ random_dirs.T).std(0, ddof=1)) <= stddev[0] + 1e-6
    # The pad covers the data: 99% of the codes inside the span on each axis, little waste.
    span = np.asarray(pca["range"])
    inside = (projected >= span[:, 0]) & (projected <= span[:, 1])
    assert np.all(inside.mean(0) >= 0.99)
    assert np.all(span[:, 1] - span[:, 0] <= 1.5 * (projected.max(0) - projected.min(0)))
    np.testing.assert_allclose(e["points"]["coords"], projected[:len(e["points"]["coords"]), :2], atol=1e-3)
    assert e["points"]["labels"] == labels[:len(e["points"]["labels"])].tolist()
    assert sorted({x["label"] for x in e["examples"]}) == sorted(set(labels.tolist()))
    for example in e["examples"]:
        assert labels[example["index"]] == example["label"]
        np.testing.assert_allclose(example["z"], codes[example["index"]], atol=1e-5)
    assert e["prior"] == {"type": "normal"} and e["latent_dim"] == 8 and e["image_shape"] == [28, 28, 1]


def test_write_explorer_adds_the_same_file_and_refuses_another_model(exported, tiny_run, tiny_conditional_run, tmp_path):
    from vae_tf.export import ExportError, write_explorer

    out, manifest = exported
    copy = tmp_path / "old_export"
    copy.mkdir()
    shutil.copy(os.path.join(out, "decoder.onnx"), copy)
    old = {k: v for k, v in manifest.items() if k != "explorer"}
    (copy / "manifest.json").write_text(json.dumps(old))
    with pytest.raises(ExportError, match="is not the model exported"):
        write_explorer(tiny_conditional_run, str(copy))
    assert not (copy / "explorer.json").exists()
    entry = write_explorer(tiny_run, str(copy))
    assert entry["sha256"] == manifest["explorer"]["sha256"]  # deterministic: the export's own file
    assert json.loads((copy / "manifest.json").read_text())["explorer"] == entry


@pytest.mark.skipif(not os.path.exists(os.path.join(PACKAGED, "manifest.json")), reason="saved_models/mnist_vae is not committed")
def test_packaged_model_has_its_explorer_json():
    from vae_tf.export import pipeline

    with open(os.path.join(PACKAGED, "manifest.json")) as f:
        entry = json.load(f)["explorer"]
    path = os.path.join(PACKAGED, entry["path"])
    assert pipeline.sha256_file(path) == entry["sha256"] and os.path.getsize(path) == entry["size_bytes"]
    with open(path) as f:
        e = json.load(f)
    assert e["latent_dim"] == 32 and e["prior"]["type"] == "mixture" and len(e["pca"]["directions"]) == 8


# --- vae-tf explore: checks before serving ------------------------------------------------


def _copy_export(src: str, dst) -> str:
    """The files the explorer reads, hard-linked (a test may then replace or delete one)."""
    os.makedirs(dst, exist_ok=True)
    for name in ("manifest.json", "explorer.json", *DECODER_FILES):
        if os.path.exists(os.path.join(src, name)):
            os.link(os.path.join(src, name), os.path.join(dst, name))
    return str(dst)


def _corrupt(path: str) -> None:
    data = bytearray(open(path, "rb").read())
    os.unlink(path)  # break the hard link first
    data[len(data) // 2] ^= 0xFF
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture(scope="session")
def web_dist():
    """The built page (`npm ci --prefix web && npm run --prefix web build`)."""
    from vae_tf.explore import find_web_dist

    return find_web_dist(os.path.join(REPO, "web", "dist"))


def _explore(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vae_tf.cli", "explore", *args, "--port", "0"], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("damage", ["no decoder.onnx", "corrupt decoder.onnx", "no explorer.json", "no manifest"])
def test_explore_refuses_a_broken_export(exported, tmp_path, damage):
    export = _copy_export(exported[0], tmp_path / "export")
    target = {"no decoder.onnx": "decoder.onnx", "corrupt decoder.onnx": "decoder.onnx",
              "no explorer.json": "explorer.json", "no manifest": "manifest.json"}[damage]
    if damage.startswith("corrupt"):
        _corrupt(os.path.join(export, target))
    else:
        os.unlink(os.path.join(export, target))
    result = _explore(export)
    assert result.returncode == 2, result
    assert result.stderr.startswith("vae-tf: error: ") and target in result.stderr, result.stderr
    expected = {"no decoder.onnx": "has no decoder.onnx", "corrupt decoder.onnx": "is corrupt",
                "no explorer.json": "--explorer-only", "no manifest": "is not an exported model"}[damage]
    assert expected in result.stderr


def test_explore_says_how_to_build_a_missing_or_incomplete_page(exported, tmp_path, web_dist):
    result = _explore(exported[0], "--web", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "npm ci --prefix web && npm run --prefix web build" in result.stderr, result.stderr
    partial = tmp_path / "partial"
    shutil.copytree(web_dist, partial, copy_function=os.link)
    os.unlink(partial / "vendor" / "ort" / "ort-wasm-simd-threaded.wasm")
    result = _explore(exported[0], "--web", str(partial))
    assert result.returncode == 2, result
    assert "incomplete" in result.stderr and "vendor/ort/ort-wasm-simd-threaded.wasm is missing" in result.stderr
    assert "npm ci --prefix web && npm run --prefix web build" in result.stderr


def test_benchmark_table_sets_browser_beside_python_and_judges_the_targets():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import bench_explorer
    finally:
        sys.path.remove(os.path.join(REPO, "benchmarks"))
    load = {"load_before": [1.0, 0.5, 0.25], "load_after": [1.5, 0.5, 0.25]}
    row = lambda file, ms: {"file": file, "batch1_ms": ms, **load}  # noqa: E731
    results = {
        "model": "saved_models/mnist_vae", "date": "2026-12-02", "chromium": "156", "isolated": True,
        "machine": {"cores": 2}, "protocol": {"calls": 1000, "warmup": 100, "windows": 3},
        "web_packages": {"onnxruntime-web": "1.30.0", "@litertjs/core": "2.5.3"},
        "decode": {"onnx": {"browser": row("decoder.onnx", 0.1), "python": {**row("decoder.onnx", 0.04), "engine": "ort"}},
                   "litert": {"browser": row("decoder_float32.tflite", 0.25),
                              "python": {**row("decoder_float32.tflite", 0.05), "engine": "litert"}}},
        "page_load": {"first_image_ms_median": 1200.0, "first_image_ms_min": 1100.0, "first_image_ms_max": 1400.0,
                      "loads": [{"load_onnx_ms": 700.0}] * 3},
        "targets_met": {"first_image": True},
    }
    text = bench_explorer.markdown(results)
    assert "| decoder.onnx | onnxruntime-web 1.30.0 (wasm) | **0.100** | ort | 0.040 | 2.5 | <= 0.2 ms: met |" in text
    assert ("| decoder_float32.tflite | LiteRT.js 2.5.3 (wasm, XNNPACK) | **0.250** | litert | 0.050 | 5.0 "
            "| <= 0.2 ms: not met |") in text
    assert "median **1200 ms** (range 1100-1400 ms); target <= 1500 ms: met" in text
    assert "1.0/0.5/0.25 → 1.5/0.5/0.25" in text


# --- The page in headless Chromium -----------------------------------------------------


class Explorer:
    """A running `vae-tf explore EXPORT_DIR --port 0` (the CLI, in a subprocess)."""

    def __init__(self, export_dir: str, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vae_tf.cli", "explore", export_dir, "--port", "0", *args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout], daemon=True).start()
        self.stderr: list[str] = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            line = ""
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if not match:
            self.close()
            raise AssertionError(f"vae-tf explore printed no URL: {line!r} {''.join(self.stderr)}")
        self.url = match.group(0)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()


@pytest.fixture
def open_page(chromium):
    """open_page(url, width, height) -> a Playwright page at `url`, its console kept."""
    contexts = []

    def open_(url, width=1280, height=900):
        context = chromium.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.console_lines = []
        page.on("console", lambda m: page.console_lines.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: page.console_lines.append(f"pageerror: {e}"))
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture(scope="module")
def packaged_server():
    server = Explorer(PACKAGED)
    yield server
    server.close()


@pytest.fixture(scope="module")
def conditional_server(exported_conditional):
    server = Explorer(exported_conditional[0])
    yield server
    server.close()


def _ready(page) -> dict:
    page.evaluate("() => window.vae.ready")
    return page.evaluate("() => ({runtimes: vae.runtimes, latentDim: vae.latentDim, imageShape: vae.imageShape, "
                         "errors: vae.errors, conditional: vae.conditional})")


def _draws(page, canvas: str) -> int:
    return int(page.evaluate(f"() => Number(document.getElementById('{canvas}').dataset.draws || 0)"))


def _wait_redraw(page, canvas: str, before: int) -> None:
    page.wait_for_function(f"() => Number(document.getElementById('{canvas}').dataset.draws || 0) > {before}")


def _pixels(page, canvas: str) -> np.ndarray:
    """The canvas's own pixels [h, w] (grey: the red channel) in [0, 1]."""
    data = page.evaluate(
        f"() => {{ const c = document.getElementById('{canvas}'); "
        "return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)]; }")
    w, h, rgba = data
    return np.asarray(rgba, np.float64).reshape(h, w, 4)[..., 0] / 255.0


def _tiles(grid: np.ndarray, n: int, cols: int, size: int = 28, gap: int = 2) -> np.ndarray:
    return np.stack([grid[(i // cols) * (size + gap):(i // cols) * (size + gap) + size,
                          (i % cols) * (size + gap):(i % cols) * (size + gap) + size] for i in range(n)])


def _screenshot(page, selector: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("L"), np.float64) / 255.0


def _python_decoders(export_dir: str) -> dict:
    from vae_tf.export import load_exported

    exp = load_exported(export_dir)
    return {"onnx": exp.onnx(num_threads=1), "litert": exp.tflite("float32", num_threads=1), "tf": exp}


@pytest.mark.parametrize("which", ["packaged", "conditional"])
@browser
def test_decode_in_the_browser_equals_the_python_runtimes(request, open_page, which):
    """window.vae.decode through onnxruntime-web and LiteRT.js equals Python ONNX Runtime
    and LiteRT within 1e-5 on the float32 files; the reduced-precision files equal the TF
    decoder within the export's tolerances."""
    server = request.getfixturevalue("packaged_server" if which == "packaged" else "conditional_server")
    export_dir = PACKAGED if which == "packaged" else request.getfixturevalue("exported_conditional")[0]
    with open(os.path.join(export_dir, "manifest.json")) as f:
        manifest = json.load(f)
    page = open_page(server.url)
    info = _ready(page)
    assert info["latentDim"] == manifest["latent_dim"] and info["imageShape"] == manifest["image_shape"]
    assert {"onnx", "litert", "litert-int8"} <= set(info["runtimes"]) and not info["errors"]
    assert set(info["runtimes"]) == {r for r, f in RUNTIME_FILES.items() if f in manifest["artifacts"]}

    n = 6
    z = np.random.default_rng(20240601).standard_normal((n, manifest["latent_dim"])).astype(np.float32)
    labels = (np.arange(n) * 3 % manifest["num_classes"]).astype(np.int32) if manifest["conditional"] else None
    python = _python_decoders(export_dir)
    reference = {"onnx": python["onnx"].decode(z, labels), "litert": python["litert"].decode(z, labels)}
    tf_images = python["tf"].decode(z, labels)
    shape = (n, *manifest["image_shape"])
    for runtime in info["runtimes"]:
        images = page.evaluate("([z, runtime, labels]) => vae.decode(z, runtime, labels)",
                               [z.tolist(), runtime, None if labels is None else labels.tolist()])
        assert len(images) == n and all(len(image) == int(np.prod(manifest["image_shape"])) for image in images)
        web = np.asarray(images, np.float32).reshape(shape)
        assert np.all((web >= 0) & (web <= 1))
        if runtime in reference:
            diff = np.max(np.abs(web - reference[runtime]))
            assert diff <= 1e-5, f"{runtime}: max |browser - Python| = {diff}"
        tolerance = manifest["tolerances"][RUNTIME_FILES[runtime]]
        diff = np.max(np.abs(web - tf_images))
        assert diff <= tolerance, f"{runtime}: max |browser - TF decoder| = {diff} > {tolerance}"

    # Misuse is a clear rejection, not a wrong image.
    for args, message in [([[[0.0] * 3], "onnx"], "has 3 numbers"), ([z[:1].tolist(), "no-such"], "not available")]:
        error = page.evaluate("([z, r]) => vae.decode(z, r).then(() => 'resolved', (e) => e.message)", args)
        assert message in error


@browser
def test_pad_sliders_samples_interpolation_and_runtime_switch(packaged_server, open_page):
    page = open_page(packaged_server.url)
    info = _ready(page)
    page.wait_for_function("() => Number(document.getElementById('interp').dataset.draws || 0) > 0")
    assert page.locator("#fatal").is_hidden() and page.locator(".note-error").count() == 0

    # The pad: the decoded view follows the pointer (screenshots differ), showing a digit.
    pad = page.locator("#pad").bounding_box()
    views = []
    for fx, fy in [(0.15, 0.2), (0.85, 0.25), (0.5, 0.85)]:
        before = _draws(page, "view")
        page.mouse.move(pad["x"] + fx * pad["width"], pad["y"] + fy * pad["height"])
        _wait_redraw(page, "view", before)
        views.append(_screenshot(page, "#view"))
        assert views[-1].std() > 0.15, "the decoded view is blank"
    for a, b in [(0, 1), (1, 2), (0, 2)]:
        assert np.abs(views[a] - views[b]).mean() > 0.02, "moving on the pad did not change the image"

    # A slider of the third direction changes the image.
    before, image = _draws(page, "view"), _pixels(page, "view")
    page.locator("#sliders input").first.evaluate("(el) => { el.value = el.max; el.dispatchEvent(new Event('input')); }")
    _wait_redraw(page, "view", before)
    assert np.abs(_pixels(page, "view") - image).mean() > 0.01

    # Samples: 16 drawn digits, new ones on "Sample".
    grid = _tiles(_pixels(page, "samples"), 16, 8)
    assert all(tile.std() > 0.1 for tile in grid), "a sample is blank"
    before = _draws(page, "samples")
    page.click("#sample")
    _wait_redraw(page, "samples", before)
    assert np.abs(_tiles(_pixels(page, "samples"), 16, 8) - grid).mean() > 0.05
    assert "seed 2" in page.inner_text("#sample-info")

    # Interpolation: its end frames are the decoded end points (two stored example codes).
    with open(os.path.join(PACKAGED, "explorer.json")) as f:
        examples = json.load(f)["examples"]
    a = examples[int(page.input_value("#interp-a").split(":")[1])]["z"]
    b = examples[int(page.input_value("#interp-b").split(":")[1])]["z"]
    frames = _tiles(_pixels(page, "interp"), 10, 10)
    ends = _python_decoders(PACKAGED)["onnx"].decode(np.asarray([a, b], np.float32))[..., 0]
    assert np.max(np.abs(frames[0] - ends[0])) <= 1 / 255 + 1e-6 and np.max(np.abs(frames[-1] - ends[1])) <= 1 / 255 + 1e-6
    assert np.abs(frames[0] - frames[-1]).mean() > 0.05 and all(f.std() > 0.05 for f in frames)
    before = _draws(page, "interp")
    page.click("#random-pair")
    _wait_redraw(page, "interp", before)
    assert np.abs(_tiles(_pixels(page, "interp"), 10, 10) - frames).mean() > 0.02

    # The runtime switch: every runtime decodes the pad and shows its per-decode time.
    for runtime in info["runtimes"]:
        before = _draws(page, "view")
        page.click(f"#runtime-switch [data-runtime='{runtime}']")
        page.mouse.move(pad["x"] + 0.3 * pad["width"], pad["y"] + 0.6 * pad["height"])
        page.mouse.move(pad["x"] + 0.32 * pad["width"], pad["y"] + 0.62 * pad["height"])
        _wait_redraw(page, "view", before)
        assert page.get_attribute(f"#runtime-switch [data-runtime='{runtime}']", "aria-checked") == "true"
        assert re.fullmatch(r"\d+\.\d+ ms", page.inner_text("#decode-time")), page.inner_text("#decode-time")
        assert RUNTIME_FILES[runtime] in page.inner_text("#view-runtime")
        assert _pixels(page, "view").std() > 0.15
    assert not [line for line in page.console_lines if line.startswith("pageerror")]


@browser
def test_phone_width_viewport(packaged_server, open_page):
    page = open_page(packaged_server.url, width=390, height=844)
    _ready(page)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390, "the page scrolls sideways"
    pad = page.locator("#pad").bounding_box()
    view = page.locator("#view").bounding_box()
    assert pad["x"] >= 0 and pad["x"] + pad["width"] <= 390 and pad["width"] >= 250
    assert view["y"] + view["height"] <= 844 and pad["y"] < 844, "the view and the pad do not start on the first screen"
    before, image = _draws(page, "view"), _pixels(page, "view")
    page.mouse.click(pad["x"] + 0.8 * pad["width"], pad["y"] + 0.2 * pad["height"])
    _wait_redraw(page, "view", before)
    assert np.abs(_pixels(page, "view") - image).mean() > 0.02


@browser
def test_label_picker_draws_the_chosen_class(conditional_server, exported_conditional, open_page, heldout_binary):
    """A trained conditional model: samples for label 3 look like 3s and differ from
    those for label 7, and they come from that class's prior."""
    page = open_page(conditional_server.url)
    assert _ready(page)["conditional"]
    page.wait_for_function("() => Number(document.getElementById('samples').dataset.draws || 0) > 0")
    assert page.locator("#label-bar").is_visible()
    grids = {}
    for label in (3, 7):
        before = _draws(page, "samples")
        page.click(f"#label-picker [data-label='{label}']")
        _wait_redraw(page, "samples", before)
        assert page.get_attribute(f"#label-picker [data-label='{label}']", "aria-checked") == "true"
        assert f"class {label}" in page.inner_text("#sample-info")
        grids[label] = _tiles(_pixels(page, "samples"), 16, 8)
    assert np.abs(grids[3] - grids[7]).mean() > 0.05
    # The mean of each grid correlates with the mean held-out digit of its own class
    # (measured on this tiny model: 0.93 against 0.68 for the other class).
    images, labels = heldout_binary
    templates = {c: images[labels == c][..., 0].mean(0).ravel() for c in (3, 7)}
    for c, other in ((3, 7), (7, 3)):
        mean = grids[c].mean(0).ravel()
        own, wrong = (np.corrcoef(mean, templates[k])[0, 1] for k in (c, other))
        assert own > wrong + 0.1, f"samples drawn for label {c} look like {other}s: {own:.2f} vs {wrong:.2f}"

    # The page's prior draws are class 3's mixture: their mean is that mixture's mean.
    with open(os.path.join(exported_conditional[0], "explorer.json")) as f:
        prior = json.load(f)["prior"]
    draws = np.asarray(page.evaluate(
        "async () => { const m = await import('./model.js'); "
        "const explorer = await (await fetch('model/explorer.json')).json(); "
        "return m.samplePrior({explorer, latentDim: explorer.latent_dim}, 4000, 3, 11); }"))
    weights = np.exp(np.asarray(prior["log_weights"][3]))
    mean = weights @ np.asarray(prior["loc"][3])
    second = weights @ (np.asarray(prior["loc"][3]) ** 2 + np.asarray(prior["scale_diag"][3]) ** 2)
    stderr = np.sqrt((second - mean**2) / len(draws))
    assert np.all(np.abs(draws.mean(0) - mean) <= 5 * stderr + 1e-3)


@browser
def test_corrupt_tflite_file_is_reported_and_the_rest_works(tmp_path, open_page):
    export = _copy_export(PACKAGED, tmp_path / "export")
    _corrupt(os.path.join(export, "decoder_int8.tflite"))
    server = Explorer(export)
    try:
        page = open_page(server.url)
        info = _ready(page)
        assert "litert-int8" not in info["runtimes"] and {"onnx", "litert"} <= set(info["runtimes"])
        note = page.inner_text("#messages")
        assert "decoder_int8.tflite is corrupt" in note
        assert _pixels(page, "view").std() > 0.15
        assert any("decoder_int8.tflite is corrupt" in line for line in server.stderr), server.stderr
    finally:
        server.close()


@browser
@pytest.mark.parametrize("damage", ["decoder.onnx deleted", "every decoder deleted", "LiteRT.js missing",
                                    "main.js missing"])
def test_failures_after_start_are_shown_on_the_page(tmp_path, open_page, web_dist, damage):
    """Files that disappear after `vae-tf explore` checked them: the page says what is
    wrong (and still decodes with what is left), never a blank page."""
    export = _copy_export(PACKAGED, tmp_path / "export")
    web = tmp_path / "web"
    shutil.copytree(web_dist, web, copy_function=os.link)
    server = Explorer(export, "--web", str(web))
    try:
        if damage == "decoder.onnx deleted":
            os.unlink(os.path.join(export, "decoder.onnx"))
        elif damage == "every decoder deleted":
            for name in DECODER_FILES:
                os.unlink(os.path.join(export, name))
        elif damage == "LiteRT.js missing":
            os.unlink(web / "vendor" / "litert" / "core.js")
        else:
            os.unlink(web / "main.js")
        page = open_page(server.url)
        if damage in ("decoder.onnx deleted", "LiteRT.js missing"):
            info = _ready(page)
            litert = ["litert", "litert-int8", "litert-float16", "litert-dynamic-int8"]
            assert info["runtimes"] == (litert if damage.startswith("decoder") else ["onnx"])
            text = page.inner_text("#messages")
            if damage.startswith("decoder"):
                assert "decoder.onnx: the server answered 404" in text
            else:
                assert "LiteRT.js (vendor/litert/core.js) could not be loaded" in text and "npm ci --prefix web" in text
            assert _pixels(page, "view").std() > 0.15
        else:
            page.wait_for_selector("#fatal", state="visible", timeout=30000)
            text = page.inner_text("#fatal")
            if damage == "main.js missing":
                assert "main.js could not be loaded" in text and "npm ci --prefix web" in text
                return
            assert "No decoder of this export could be loaded" in text
            assert "decoder.onnx: the server answered 404" in page.inner_text("#messages")
            error = page.evaluate("() => vae.ready.then(() => 'resolved', (e) => e.message)")
            assert error.startswith("No decoder of this export could be loaded") and "decoder_int8.tflite" in error
        assert page.locator("#app").is_visible() or page.locator("#fatal").is_visible()
    finally:
        server.close()
