"""`export_run(run_dir, out_dir)`: the whole export stage.

A table of formats (`FORMATS`) drives it. Everything is written into a temporary
directory beside `out_dir`: the TF Serving SavedModel at `serving/<version>/`, the
decoder-only SavedModels the converters read (then deleted), the four TFLite decoders,
the ONNX decoder and `explorer.json` (the in-browser explorer's metadata). Every artifact is run in its own runtime on a fixed batch of latents
and compared with the TF decoder; past its tolerance the export stops with an
`ExportError` naming the artifact. Only a fully verified export is moved into place
(a new `out_dir` in one rename; into an existing one the version directory and then
each file by rename, `manifest.json` last), and the temporary directory is always
removed, so a failure never leaves a half-written version.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time

import numpy as np

from vae_tf import fileio, interrupts
from vae_tf.fileio import sha256_file
from vae_tf.export import explorer, onnx_export, serving, tflite
from vae_tf.export.check_serving import run_signatures
from vae_tf.export.runtime import MANIFEST, ONNXDecoder, TFLiteDecoder
from vae_tf.export.validate import (
    GOLDEN_SIZE,
    REFERENCE_SEED,
    REFERENCE_SIZE,
    TOLERANCES,
    ExportError,
    check_tolerance,
    max_abs_diff,
    reference_batch,
)
from vae_tf.networks import edge_form_layers

logger = logging.getLogger("vae_tf.export")
# One INFO record per artifact as it is verified (`vae-tf export` prints them):
# name, KiB, the difference from TF, seconds.
PROGRESS_LINE = "%-28s %6.0f KiB%s  %.1f s"

MANIFEST_FORMAT = 1
SERVING_DIR = "serving"


def _decoder_dir(ctx, batch_size: int | None, edge_form: bool) -> str:
    """The decoder-only SavedModel with this static batch, in its edge form or not,
    saved under the export's temporary directory on first use (`serving.save_decoder`)."""
    model = ctx["model"]
    edge_form = edge_form and bool(edge_form_layers(model.decoder_body))
    key = (batch_size, edge_form)
    if key not in ctx["decoder_dirs"]:
        path = os.path.join(ctx["tmp"], f".decoder_savedmodel_batch_{batch_size or 'any'}_{'edge' if edge_form else 'plain'}")
        serving.save_decoder(model, path, batch_size=batch_size, edge_form=edge_form)
        ctx["decoder_dirs"][key] = path
    return ctx["decoder_dirs"][key]


def _write_tflite(variant):
    def write(ctx, path):
        model = ctx["model"]
        representative = tflite.representative_latents(model, ctx["tflite_batch"])
        decoder_dir = _decoder_dir(ctx, ctx["tflite_batch"], variant in tflite.EDGE_FORM_VARIANTS)
        data = tflite.convert(
            decoder_dir, variant, representative, model.config.conditional,
            float_head=model.config.likelihood in tflite.FLOAT_HEAD_LIKELIHOODS,
        )
        with open(path, "wb") as f:
            f.write(data)
        return {"format": f"tflite_{variant}", **tflite.describe(path)}

    return write


def _run_tflite(ctx, path, z, label):
    return TFLiteDecoder(path, ctx["manifest"]).decode(z, label)


def _write_onnx(ctx, path):
    model = onnx_export.convert(_decoder_dir(ctx, None, edge_form=True), opset=ctx["opset"], metadata=ctx["onnx_metadata"])
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return {"format": "onnx", **onnx_export.describe(path)}


def _run_onnx(ctx, path, z, label):
    return ONNXDecoder(path, ctx["manifest"]).decode(z, label)


# name -> (writer(ctx, path) -> manifest entry, runner(ctx, path, z, label) -> images)
FORMATS = {
    **{tflite.filename(v): (_write_tflite(v), _run_tflite) for v in tflite.VARIANTS},
    onnx_export.FILENAME: (_write_onnx, _run_onnx),
}


def sha256_tree(path: str) -> str:
    """sha256 of a directory: of the lines "<sha256 of file>  <relative path>\\n" of its
    files in sorted path order (what `sha256sum` prints, sorted)."""
    lines = []
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            lines.append(f"{sha256_file(full)}  {os.path.relpath(full, path).replace(os.sep, '/')}\n")
    return hashlib.sha256("".join(sorted(lines, key=lambda l: l[66:])).encode()).hexdigest()


def tree_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def existing_versions(out_dir: str) -> list[int]:
    root = os.path.join(out_dir, SERVING_DIR)
    if not os.path.isdir(root):
        return []
    return sorted(int(d) for d in os.listdir(root) if re.fullmatch(r"[0-9]+", d))


def _run_metrics(run_dir: str) -> dict:
    path = os.path.join(run_dir, "history.json")
    if not fileio.exists(path):
        return {}
    with fileio.open_file(path) as f:
        history = json.load(f)
    last = {k: v[-1] for k, v in history.get("history", {}).items() if v}
    return {"final_epoch": last, "images_per_second": history.get("images_per_second")}


def _serving_inputs(model, z, label) -> tuple[dict, dict]:
    """Inputs for every serving signature and the live model's outputs for them."""
    c = model.config
    images = (model.decode(z, label).mean().numpy() > 0.5).astype(np.float32)
    num, seed = 4, 3
    sample_label = None if label is None else label[:num]
    inputs = {
        "serving_default/z": z,
        "decode/z": z,
        "sample/num_samples": np.array(num, np.int32),
        "sample/seed": np.array(seed, np.int32),
        "encode/image": images,
        "reconstruct/image": images,
    }
    if c.conditional:
        for key in ("serving_default", "decode", "encode", "reconstruct"):
            inputs[f"{key}/label"] = label
        inputs["sample/label"] = sample_label
    q = model.encode(images, label)
    try:
        stddev = q.stddev()
    except NotImplementedError:
        stddev = q.distribution.stddev()
    decoded = model.decode(z, label).mean().numpy()
    expected = {
        "serving_default/image": decoded,
        "decode/image": decoded,
        "sample/image": model.sample(num, seed=(seed, 0), label=sample_label).numpy(),
        "encode/z_mean": model.encode_mean(images, label).numpy(),
        "encode/z_stddev": stddev.numpy(),
        "reconstruct/image": model.reconstruct(images, label).numpy(),
    }
    return inputs, expected


def _verify_serving(model, path: str, z, label, tolerance: float) -> tuple[dict, float]:
    inputs, expected = _serving_inputs(model, z, label)
    outputs, specs = run_signatures(path, inputs)
    worst = 0.0
    for key, want in expected.items():
        if key not in outputs:
            raise ExportError(f"SavedModel {path}: signature output {key} is missing.")
        worst = max(worst, max_abs_diff(f"SavedModel signature {key}", outputs[key], want))
        check_tolerance(f"SavedModel signature {key}", worst, TOLERANCES["saved_model"])
    return specs, worst


def _install(tmp: str, out_dir: str, version: int, names: list[str], overwrite: bool) -> None:
    """Moves a verified export from `tmp` into `out_dir`, each step a rename."""
    if not os.path.exists(out_dir):
        os.rename(tmp, out_dir)
        return
    target = os.path.join(out_dir, SERVING_DIR, str(version))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    trash = None
    if os.path.exists(target):
        if not overwrite:
            raise ExportError(f"{target} appeared during the export; pass overwrite=True (--overwrite) to replace it.")
        trash = os.path.join(tmp, ".replaced")
        os.rename(target, trash)
    os.rename(os.path.join(tmp, SERVING_DIR, str(version)), target)
    for name in [*names, MANIFEST]:
        os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))


def latent_description(config) -> str:
    """What the decoders' input z is, for manifest.json and the ONNX metadata."""
    c = config
    prior = {"normal": "N(0, I)", "mog": "the learned mixture of Gaussians (explorer.json 'prior')"}.get(c.prior, c.prior)
    if not c.hierarchical:
        return f"the latent code, {c.latent_dim} floats; new images: z drawn from the prior, {prior}"
    sizes = c.latent_layers
    lower = sum(sizes[:-1])
    return (
        f"the code of a {len(sizes)}-layer latent hierarchy (layer sizes {', '.join(map(str, sizes))}, bottom first): "
        f"z[:, :{lower}] is the standard-normal noise of the lower layers (u_i = (z_i - mu_i) / sigma_i under "
        f"p(z_i | z_>i), reparameterized top-down inside the decoder) and z[:, {lower}:] the top layer z_L; new "
        f"images: the first {lower} entries from N(0, 1) and the last {sizes[-1]} from the prior, {prior} "
        "(explorer.json's 'prior' is this joint prior over all of z)"
    )


def export_run(
    run_dir: str,
    out_dir: str,
    *,
    version: int | None = None,
    overwrite: bool = False,
    opset: int = 17,
    tflite_batch: int | None | str = "auto",
) -> dict:
    """Exports the trained model of `run_dir` to `out_dir` and returns the manifest.

    Writes `out_dir/serving/<version>/` (TF Serving SavedModel), `decoder_float32.tflite`,
    `decoder_float16.tflite`, `decoder_dynamic_int8.tflite`, `decoder_int8.tflite`,
    `decoder.onnx`, each verified against the TF decoder, `explorer.json` (what the
    in-browser explorer needs: principal directions of held-out codes, examples, the
    prior's parameters; computed from the run's held-out images, `explorer.py`) and
    `manifest.json`.

    Args:
        run_dir: a finished run directory (`vae-tf train --out RUN_DIR`).
        out_dir: the exported model directory, e.g. saved_models/mnist_vae.
        version: serving version number; None takes the next free one (1 in a new dir).
        overwrite: replace `serving/<version>/` if it exists (otherwise an error).
        opset: ONNX opset.
        tflite_batch: batch size fixed in the TFLite decoders: "auto" (open for an MLP
            decoder, 1 for a convolutional one: `tflite.edge_batch_size`), None (open) or
            a positive int. The SavedModel and ONNX decoders always take any batch.

    Raises:
        ExportError: naming the artifact and the problem (conversion failed, output past
            its tolerance, version exists).
    """
    import tensorflow as tf

    import vae_tf
    from vae_tf.config import RunConfig
    from vae_tf.networks import count_macs
    from vae_tf.training import load

    if not fileio.is_local(out_dir):
        raise ExportError(
            f"--out {os.fspath(out_dir)} is not a local directory: the TFLite and ONNX converters and the "
            "checks of their files work on local files only. Export to a local directory and copy it "
            "(e.g. `gsutil -m cp -r`); the run directory itself may be a gs:// URL."
        )
    out_dir = os.path.abspath(os.fspath(out_dir))
    if version is None:
        version = max(existing_versions(out_dir), default=0) + 1
    if isinstance(version, bool) or not isinstance(version, int) or version <= 0:
        raise ExportError(f"serving version must be a positive integer, got {version!r}.")
    if os.path.exists(os.path.join(out_dir, SERVING_DIR, str(version))) and not overwrite:
        raise ExportError(
            f"{os.path.join(out_dir, SERVING_DIR, str(version))} exists; pass --overwrite (overwrite=True) to "
            f"replace it, or another --version."
        )
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ExportError(f"--out {out_dir} exists and is not a directory.")

    if tflite_batch != "auto" and tflite_batch is not None and (
        isinstance(tflite_batch, bool) or not isinstance(tflite_batch, int) or tflite_batch <= 0
    ):
        raise ExportError(f"tflite_batch must be 'auto', None (any batch) or a positive int, got {tflite_batch!r}.")
    model = load(run_dir)
    if tflite_batch == "auto":
        tflite_batch = tflite.edge_batch_size(model.config)
    run_config = RunConfig.load(os.path.join(run_dir, "config.json"))
    c = model.config
    z, label = reference_batch(c.latent_dim, c.conditional, c.num_classes)
    reference = model.decode(z, label).mean().numpy()

    manifest = {
        "format_version": MANIFEST_FORMAT,
        "producer": f"vae-tf {vae_tf.__version__}",
        "tensorflow": tf.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run_dir": fileio.absolute(run_dir),
        "latent_dim": c.latent_dim,
        "image_shape": list(c.image_shape),
        "conditional": c.conditional,
        "num_classes": c.num_classes,
        "prior": c.prior,
        "latent_layers": list(c.latent_layers),
        "z": latent_description(c),
        "decoder_macs_per_image": count_macs(model.decoder_body),
        "tflite_batch": tflite_batch,
        "config": run_config.to_dict(),
        "metrics": _run_metrics(run_dir),
        "serving_version": version,
        "reference_batch": {
            "latents": f"numpy default_rng({REFERENCE_SEED}).standard_normal(({REFERENCE_SIZE}, {c.latent_dim})), float32",
            "labels": None if label is None else f"arange({REFERENCE_SIZE}) % {c.num_classes}",
            "metric": "max |artifact output - TF decoder mean of p(x|z)| over all pixels",
        },
        "golden": {
            "z": z[:GOLDEN_SIZE].tolist(),
            "label": None if label is None else label[:GOLDEN_SIZE].tolist(),
            "image": np.round(reference[:GOLDEN_SIZE], 7).tolist(),
        },
        "tolerances": dict(TOLERANCES),
        "artifacts": {},
    }
    ctx = {
        "model": model,
        "opset": opset,
        "tflite_batch": tflite_batch,
        "manifest": manifest,
        "onnx_metadata": {
            "producer": f"vae-tf {vae_tf.__version__} (tf2onnx)",
            "vae_tf_version": vae_tf.__version__,
            "model_config": c.to_dict(),
            "inputs": "z float32 [batch, latent_dim]" + (", label int32 [batch]" if c.conditional else ""),
            "z": latent_description(c),
            "outputs": "image float32 [batch, H, W, C]: the mean of p(x|z)",
        },
    }

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.export-tmp-", dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; it may become out_dir itself.
    try:
        # SavedModel for TF Serving.
        start = time.perf_counter()
        serving_rel = f"{SERVING_DIR}/{version}"
        serving_path = os.path.join(tmp, SERVING_DIR, str(version))
        try:
            serving.save_serving(model, serving_path)
            specs, diff = _verify_serving(model, serving_path, z, label, TOLERANCES["saved_model"])
        except ExportError:
            raise
        except Exception as err:  # noqa: BLE001 - any converter failure is reported by artifact
            raise ExportError(f"SavedModel {serving_rel}: {type(err).__name__}: {err}") from err
        manifest["artifacts"]["saved_model"] = {
            "path": serving_rel, "format": "saved_model", "tags": [serving.SERVE_TAG], "signatures": specs,
            "size_bytes": tree_size(serving_path), "sha256": sha256_tree(serving_path),
            "max_abs_diff": diff, "tolerance": TOLERANCES["saved_model"],
        }
        logger.info(PROGRESS_LINE, f"saved_model ({serving_rel})", tree_size(serving_path) / 1024,
                    f"  max |diff| vs TF {diff:.2e}", time.perf_counter() - start)

        # Edge decoders, converted from decoder-only SavedModels (`_decoder_dir`).
        ctx.update(tmp=tmp, decoder_dirs={})
        for name, (write, run) in FORMATS.items():
            start = time.perf_counter()
            path = os.path.join(tmp, name)
            try:
                entry = write(ctx, path)
                output = run(ctx, path, z, label)
            except ExportError:
                raise
            except Exception as err:  # noqa: BLE001
                raise ExportError(f"{name}: conversion or run failed: {type(err).__name__}: {err}") from err
            diff = max_abs_diff(name, output, reference)
            check_tolerance(name, diff, TOLERANCES[name])
            manifest["artifacts"][name] = {
                "path": name, **entry, "size_bytes": os.path.getsize(path), "sha256": sha256_file(path),
                "max_abs_diff": diff,
                "mean_abs_diff": float(np.mean(np.abs(output - reference))),
                "tolerance": TOLERANCES[name],
            }
            logger.info(PROGRESS_LINE, name, os.path.getsize(path) / 1024, f"  max |diff| vs TF {diff:.2e}",
                        time.perf_counter() - start)
        for path in ctx["decoder_dirs"].values():
            shutil.rmtree(path)

        # What the in-browser explorer needs beside the decoders (`explorer.py`).
        start = time.perf_counter()
        metadata = explorer.run_explorer_metadata(model, run_config)
        manifest["explorer"] = explorer.write_json(metadata, os.path.join(tmp, explorer.EXPLORER))
        logger.info(PROGRESS_LINE, explorer.EXPLORER, manifest["explorer"]["size_bytes"] / 1024, "",
                    time.perf_counter() - start)

        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.write("\n")
        with interrupts.held():  # a Ctrl-C waits until every rename is done
            _install(tmp, out_dir, version, [*FORMATS, explorer.EXPLORER], overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
