"""Export stage: every artifact reloaded in its own runtime and compared with the live
model (SavedModel through a TF1 session as TF Serving runs it, LiteRT, ONNX Runtime),
input errors, atomic writes, and the committed saved_models/mnist_vae."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import numpy as np
import pytest

from vae_tf import RunConfig, TrainConfig, VAEConfig, load, train
from vae_tf.export import TOLERANCES, ExportError, export_run, load_exported
from vae_tf.export import pipeline, tflite
from vae_tf.export.check_serving import run_signatures, signature_specs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGED = os.path.join(REPO, "saved_models", "mnist_vae")
EDGE = ["decoder_float32.tflite", "decoder_float16.tflite", "decoder_dynamic_int8.tflite", "decoder_int8.tflite", "decoder.onnx"]
ALL_FILES = {*EDGE, "explorer.json", "manifest.json", "serving"}


def _decoder(exported, name):
    if name == "decoder.onnx":
        return exported.onnx()
    return exported.tflite(name[len("decoder_"):-len(".tflite")])


@pytest.fixture(scope="session")
def conv_run(tmp_path_factory):
    """A small conv VAE (transposed convolutions in the decoder) trained for one epoch."""
    run_dir = str(tmp_path_factory.mktemp("conv") / "run")
    model = VAEConfig(architecture="conv", conv_filters=(8, 16), dense_units=32, latent_dim=4)
    train(RunConfig(model=model, train=TrainConfig(epochs=1, lr_schedule="constant")), run_dir, verbose=0)
    return run_dir


def test_export_writes_exactly_the_named_files(exported):
    out, manifest = exported
    assert set(os.listdir(out)) == ALL_FILES
    assert os.listdir(os.path.join(out, "serving")) == ["1"]
    assert set(manifest["artifacts"]) == {"saved_model", *EDGE}
    for name in EDGE:
        entry = manifest["artifacts"][name]
        path = os.path.join(out, name)
        assert entry["size_bytes"] == os.path.getsize(path)
        assert entry["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
        assert entry["max_abs_diff"] <= TOLERANCES[name]
    assert manifest["artifacts"]["saved_model"]["sha256"] == pipeline.sha256_tree(os.path.join(out, "serving", "1"))
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f) == json.loads(json.dumps(manifest))
    assert manifest["latent_dim"] == 8 and manifest["image_shape"] == [28, 28, 1]
    assert "val_elbo" in manifest["metrics"]["final_epoch"]
    assert manifest["config"]["model"]["latent_dim"] == 8


def test_savedmodel_signatures_run_in_tf1_session_like_the_model(exported, tiny_model):
    out, _ = exported
    path = os.path.join(out, "serving", "1")
    specs = signature_specs(path)
    assert set(specs) == {"serving_default", "decode", "sample", "encode", "reconstruct"}
    assert specs["serving_default"]["inputs"] == {"z": {"tensor": specs["serving_default"]["inputs"]["z"]["tensor"], "dtype": "float32", "shape": [-1, 8]}}
    assert specs["serving_default"]["outputs"]["image"]["shape"] == [-1, 28, 28, 1]
    assert set(specs["sample"]["inputs"]) == {"num_samples", "seed"}
    assert specs["sample"]["inputs"]["num_samples"]["shape"] == []
    assert set(specs["encode"]["outputs"]) == {"z_mean", "z_stddev"}
    z = np.random.default_rng(5).standard_normal((3, 8)).astype(np.float32)
    x = (tiny_model.decode(z).mean().numpy() > 0.5).astype(np.float32)
    outputs, _ = run_signatures(path, {
        "serving_default/z": z, "sample/num_samples": np.int32(5), "sample/seed": np.int32(11),
        "encode/image": x, "reconstruct/image": x,
    })
    np.testing.assert_allclose(outputs["serving_default/image"], tiny_model.decode(z).mean().numpy(), atol=1e-5)
    np.testing.assert_allclose(outputs["sample/image"], tiny_model.sample(5, seed=11).numpy(), atol=1e-5)
    np.testing.assert_allclose(outputs["encode/z_mean"], tiny_model.encode_mean(x).numpy(), atol=1e-5)
    np.testing.assert_allclose(outputs["encode/z_stddev"], tiny_model.encode(x).stddev().numpy(), atol=1e-5)
    np.testing.assert_allclose(outputs["reconstruct/image"], tiny_model.reconstruct(x).numpy(), atol=1e-5)


@pytest.mark.parametrize("name", EDGE)
def test_edge_decoders_match_the_model_at_any_batch(exported, tiny_model, name):
    out, manifest = exported
    decoder = _decoder(load_exported(out), name)
    for n in (1, 7):
        z = np.random.default_rng(n).standard_normal((n, 8)).astype(np.float32)
        images = decoder.decode(z)
        assert images.shape == (n, 28, 28, 1) and images.dtype == np.float32
        assert np.max(np.abs(images - tiny_model.decode(z).mean().numpy())) <= TOLERANCES[name]
    entry = manifest["artifacts"][name]
    assert entry["inputs"]["z"]["dtype"] == "float32" and entry["inputs"]["z"]["shape"][1] == 8
    assert list(entry["outputs"]) == ["image"]


def test_tflite_signature_and_onnx_model(exported):
    import onnx

    out, manifest = exported
    for variant in tflite.VARIANTS:
        entry = manifest["artifacts"][tflite.filename(variant)]
        assert entry["signature"] == "decode"
        assert entry["inputs"] == {"z": {"shape": [-1, 8], "dtype": "float32"}}
        assert entry["outputs"] == {"image": {"shape": [-1, 28, 28, 1], "dtype": "float32"}}
    model = onnx.load(os.path.join(out, "decoder.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [i.name for i in model.graph.input] == ["z"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["producer"].startswith("vae-tf") and json.loads(meta["model_config"])["latent_dim"] == 8


def test_conditional_export_takes_labels_in_every_format(exported_conditional, tiny_conditional_model):
    out, manifest = exported_conditional
    model = tiny_conditional_model
    specs = manifest["artifacts"]["saved_model"]["signatures"]
    for name in ("serving_default", "sample", "encode", "reconstruct"):
        assert specs[name]["inputs"]["label"]["dtype"] == "int32"
    z = np.random.default_rng(1).standard_normal((10, 8)).astype(np.float32)
    label = np.arange(10, dtype=np.int32)[::-1].copy()
    want = model.decode(z, label).mean().numpy()
    exp = load_exported(out)
    np.testing.assert_allclose(exp.decode(z, label), want, atol=1e-5)
    np.testing.assert_allclose(exp.sample(4, seed=2, label=3), model.sample(4, seed=2, label=3).numpy(), atol=1e-5)
    for name in EDGE:
        assert manifest["artifacts"][name]["inputs"]["label"] == {"shape": [-1] if name.endswith("tflite") else ["batch"], "dtype": "int32"}
        assert np.max(np.abs(_decoder(exp, name).decode(z, label) - want)) <= TOLERANCES[name], name
    with pytest.raises(ExportError, match="label int32"):
        exp.onnx().decode(z)


def test_conv_model_exports_within_tolerance(conv_run, tmp_path):
    manifest = export_run(conv_run, str(tmp_path / "conv_vae"), opset=15)
    model = load(conv_run)
    exp = load_exported(str(tmp_path / "conv_vae"))
    z = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    want = model.decode(z).mean().numpy()
    for name in EDGE:
        assert manifest["artifacts"][name]["max_abs_diff"] <= TOLERANCES[name]
        assert np.max(np.abs(_decoder(exp, name).decode(z) - want)) <= TOLERANCES[name], name
    assert manifest["artifacts"]["decoder.onnx"]["opset"] == 15
    # A conv decoder's TFLite files are fixed at batch 1 (XNNPACK runs TRANSPOSE_CONV
    # only with a constant output shape); ONNX keeps the open batch.
    assert manifest["tflite_batch"] == 1
    for name in EDGE[:-1]:
        assert manifest["artifacts"][name]["inputs"]["z"]["shape"] == [1, 4], name
        assert _decoder(exp, name).batch_size == 1
    assert manifest["artifacts"]["decoder.onnx"]["inputs"]["z"]["shape"] == ["batch", 4]
    # The float decoders run the transposed convs as phase convolutions; int8 keeps them.
    import onnx
    from ai_edge_litert.interpreter import Interpreter

    for name in EDGE[:-1]:
        ops = {op["op_name"] for op in Interpreter(model_path=str(tmp_path / "conv_vae" / name))._get_ops_details()}
        variant = name[len("decoder_") : -len(".tflite")]
        assert ("TRANSPOSE_CONV" in ops) == (variant not in tflite.EDGE_FORM_VARIANTS), (name, ops)
    onnx_ops = {node.op_type for node in onnx.load(str(tmp_path / "conv_vae" / "decoder.onnx")).graph.node}
    assert "ConvTranspose" not in onnx_ops and "Conv" in onnx_ops, onnx_ops


def test_tflite_batch_is_chosen_and_checked(tiny_run, tiny_model, tmp_path):
    with pytest.raises(ExportError, match="tflite_batch must be 'auto', None .* or a positive int, got 0"):
        export_run(tiny_run, str(tmp_path / "bad"), tflite_batch=0)
    assert not os.path.exists(tmp_path / "bad")
    manifest = export_run(tiny_run, str(tmp_path / "b3"), tflite_batch=3)
    assert manifest["tflite_batch"] == 3
    exp = load_exported(str(tmp_path / "b3"))
    z = np.random.default_rng(4).standard_normal((7, 8)).astype(np.float32)  # chunks 3 + 3 + 1 (padded)
    want = tiny_model.decode(z).mean().numpy()
    for variant in ("float32", "int8"):
        decoder = exp.tflite(variant)
        assert decoder.batch_size == 3
        got = decoder.decode(z)
        assert got.shape == want.shape
        assert np.max(np.abs(got - want)) <= TOLERANCES[f"decoder_{variant}.tflite"], variant


@pytest.mark.parametrize("runtime", ["saved_model", "decoder_int8.tflite", "decoder.onnx"])
def test_wrong_latents_name_what_the_artifact_expects(exported, runtime):
    exp = load_exported(exported[0])
    decoder = exp if runtime == "saved_model" else _decoder(exp, runtime)
    with pytest.raises(ExportError, match=r"expects z float32 \[batch, 8\]; got z of shape \[2, 5\]"):
        decoder.decode(np.zeros((2, 5), np.float32))
    with pytest.raises(ExportError, match=r"expects z float32 \[batch, 8\]; got z of dtype float64"):
        decoder.decode(np.zeros((2, 8)))
    with pytest.raises(ExportError, match="not conditional"):
        decoder.decode(np.zeros((2, 8), np.float32), label=[1, 2])


def test_existing_version_is_kept_unless_overwrite(exported, tiny_run):
    out, manifest = exported
    before = pipeline.sha256_tree(os.path.join(out, "serving", "1"))
    with pytest.raises(ExportError, match="serving/1 exists"):
        export_run(tiny_run, out, version=1)
    assert pipeline.sha256_tree(os.path.join(out, "serving", "1")) == before


def test_failure_mid_export_leaves_no_partial_version(tiny_run, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(pipeline.onnx_export, "convert", broken)
    with pytest.raises(ExportError, match="decoder.onnx: .*converter exploded"):
        export_run(tiny_run, str(tmp_path / "new_vae"))
    assert os.listdir(tmp_path) == []  # neither the output nor a temporary directory
    # Into an existing export: version 2 must not appear, version 1 stays whole.
    monkeypatch.undo()
    out = str(tmp_path / "vae")
    export_run(tiny_run, out)
    files = {n: open(os.path.join(out, n), "rb").read() for n in EDGE + ["manifest.json"]}
    monkeypatch.setattr(pipeline, "TOLERANCES", {**pipeline.TOLERANCES, "decoder_int8.tflite": 0.0})
    with pytest.raises(ExportError, match="decoder_int8.tflite: max .* exceeds its tolerance 0"):
        export_run(tiny_run, out)
    assert os.listdir(os.path.join(out, "serving")) == ["1"]
    assert sorted(os.listdir(tmp_path)) == ["vae"]
    assert {n: open(os.path.join(out, n), "rb").read() for n in files} == files


def test_cli_export_and_failure_message(tiny_run, tmp_path, capsys):
    from vae_tf.cli import main

    out = str(tmp_path / "cli_vae")
    assert main(["export", tiny_run, "--out", out, "--version", "3"]) == 0
    assert "decoder_int8.tflite" in capsys.readouterr().out
    assert os.listdir(os.path.join(out, "serving")) == ["3"]
    assert main(["export", tiny_run, "--out", out, "--version", "3"]) == 2
    assert "serving/3 exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", tiny_run, "--out", out, "--tflite-batch", "one"])
    assert "expected auto, any or a positive batch size, got 'one'" in capsys.readouterr().err


# === The committed saved_models/mnist_vae ===

packaged = pytest.mark.skipif(not os.path.exists(os.path.join(PACKAGED, "manifest.json")), reason="saved_models/mnist_vae is not committed")


@pytest.fixture(scope="module")
def packaged_manifest():
    with open(os.path.join(PACKAGED, "manifest.json")) as f:
        return json.load(f)


@packaged
def test_packaged_model_matches_its_manifest(packaged_manifest):
    m = packaged_manifest
    for name, entry in m["artifacts"].items():
        path = os.path.join(PACKAGED, entry["path"])
        if os.path.isdir(path):
            assert pipeline.sha256_tree(path) == entry["sha256"], name
            size = pipeline.tree_size(path)
        else:
            assert pipeline.sha256_file(path) == entry["sha256"], name
            size = os.path.getsize(path)
        assert size == entry["size_bytes"]


@packaged
def test_packaged_model_is_small(packaged_manifest):
    total = sum(e["size_bytes"] for e in packaged_manifest["artifacts"].values())
    total += os.path.getsize(os.path.join(PACKAGED, "manifest.json"))
    total += packaged_manifest["explorer"]["size_bytes"]
    assert total < 10_000_000, f"saved_models/mnist_vae holds {total / 1e6:.1f} MB; the budget is 10 MB"


@packaged
@pytest.mark.parametrize("name", ["saved_model", *EDGE])
def test_packaged_model_reproduces_its_golden_output(packaged_manifest, name):
    golden = packaged_manifest["golden"]
    exp = load_exported(PACKAGED)
    decoder = exp if name == "saved_model" else _decoder(exp, name)
    z = np.asarray(golden["z"], np.float32)
    label = None if golden["label"] is None else np.asarray(golden["label"], np.int32)
    diff = np.max(np.abs(decoder.decode(z, label) - np.asarray(golden["image"], np.float32)))
    assert diff <= packaged_manifest["tolerances"][name], (name, diff)


@packaged
def test_packaged_model_serving_signatures(packaged_manifest):
    specs = signature_specs(os.path.join(PACKAGED, packaged_manifest["artifacts"]["saved_model"]["path"]))
    assert specs == packaged_manifest["artifacts"]["saved_model"]["signatures"]


@packaged
def test_sample_from_packaged_model_without_retraining(tmp_path, packaged_manifest):
    from vae_tf.cli import main

    png = str(tmp_path / "x.png")
    args = ["sample", "--model", PACKAGED, "--num", "8", "--out", png]
    if packaged_manifest["conditional"]:
        args += ["--digit", "3"]
    assert main(args) == 0
    assert os.path.getsize(png) > 0
    images = load_exported(PACKAGED).sample(8, seed=0, label=3 if packaged_manifest["conditional"] else None)
    assert images.shape == (8, *packaged_manifest["image_shape"])
    assert np.all((images >= 0) & (images <= 1))


def test_export_package_is_not_a_top_level_module():
    import vae_tf.export

    assert vae_tf.export.__name__ == "vae_tf.export"
    # vae_tf never imports the export stage.
    out = subprocess.run(
        [__import__("sys").executable, "-c", "import sys, vae_tf, vae_tf.cli, vae_tf.training; "
         "print(any(m.startswith('vae_tf.export') for m in sys.modules))"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "False"
