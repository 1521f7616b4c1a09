"""Colour (RGB) images: conv and resnet VAEs on 32x32x3 and 64x64x3 with every
likelihood, the discretized logistic mixture trained on 8-bit colour pictures from an
`images:DIR` folder through the CLI, bits per dimension in `vae-tf evaluate`, colour PNGs, and the
export of an RGB logistic-mixture decoder to SavedModel, TFLite and ONNX, verified."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from vae_tf import VAEConfig, load
from vae_tf.evaluation import evaluate_likelihood
from vae_tf.model import VAE


def coloured_shapes(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth colour pictures: a soft-edged disc (label 0) or square (label 1) of a random
    colour on a random two-colour linear gradient. Returns (uint8 [n, size, size, 3],
    int64 labels [n])."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    images = np.empty((n, size, size, 3), np.float32)
    labels = rng.integers(0, 2, n)
    for i in range(n):
        start, end, colour = rng.uniform(0, 1, (3, 3))
        angle = rng.uniform(0, 2 * np.pi)
        t = np.clip(0.5 + np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5), 0, 1)[..., None]
        cx, cy = rng.uniform(0.25, 0.75, 2)
        radius = rng.uniform(0.12, 0.3)
        if labels[i] == 0:
            distance = np.hypot(xx - cx, yy - cy) - radius
        else:
            distance = np.maximum(np.abs(xx - cx), np.abs(yy - cy)) - radius
        alpha = np.clip(0.5 - distance * size / 1.5, 0, 1)[..., None]  # a 1.5-pixel soft edge
        images[i] = (1 - alpha) * ((1 - t) * start + t * end) + alpha * colour
    return np.round(images * 255).astype(np.uint8), labels


TINY_RGB = VAEConfig(
    architecture="conv", conv_filters=(8, 16), dense_units=32, latent_dim=4, likelihood="logistic_mixture",
    likelihood_components=3, prior="normal", iwae_samples=1, kl_warmup_steps=0,
)


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory) -> str:
    """The same 200 pictures as PNG files in class folders disc/ and square/ (plus a
    notes file), the way a user's folder looks: `--data images:DIR`."""
    from PIL import Image

    root = tmp_path_factory.mktemp("rgb_folder")
    images, labels = coloured_shapes(200)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / ("disc", "square")[label]
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    (root / "README.txt").write_text("generated pictures\n")
    return str(root)


@pytest.fixture(scope="module")
def rgb_run(rgb_folder, tmp_path_factory) -> str:
    """A tiny conv VAE with the logistic mixture likelihood trained 4 epochs on
    `rgb_folder` through the CLI (`vae-tf train --data images:DIR ...`)."""
    from vae_tf.cli import main

    run_dir = str(tmp_path_factory.mktemp("rgb_run") / "run")
    config = tmp_path_factory.mktemp("rgb_config") / "tiny.json"
    config.write_text(json.dumps({"model": {k: v for k, v in TINY_RGB.to_dict().items() if k != "image_shape"}}))
    assert main([
        "train", "--data", f"images:{rgb_folder}", "--out", run_dir, "--config", str(config),
        "--preprocessing", "continuous", "--epochs", "4", "--batch-size", "32", "--learning-rate", "1e-2",
        "--lr-schedule", "constant", "--channels", "3", "--image-size", "32,32",
        # One unmoved copy: with the digits' default shift, 4 epochs of 7 steps leave this
        # tiny model's samples grey (these tests are about colour, not augmentation).
        "--augment-copies", "1", "--augment-shift", "0",
    ]) == 0
    return run_dir


def test_logistic_mixture_conv_trains_on_8_bit_colour(rgb_run):
    with open(os.path.join(rgb_run, "history.json")) as f:
        history = json.load(f)["history"]
    loss, val_elbo = history["loss"], history["val_elbo"]
    assert len(loss) == 4 and np.all(np.isfinite(loss)) and np.all(np.isfinite(val_elbo))
    # 3072 dimensions: 0.01 bits/dim is 21 nats per image. (20 Adam steps move the
    # log-scales by ~0.2 from their start at the pixels' spread: a slow start.)
    assert loss[-1] < loss[0] - 3 * 21, loss
    assert -val_elbo[-1] < -val_elbo[0] - 21, val_elbo
    model = load(rgb_run)
    assert model.config.image_shape == (32, 32, 3)
    mean, draw = model.sample(4, seed=1).numpy(), model.sample(4, seed=1, mean=False).numpy()
    assert mean.shape == draw.shape == (4, 32, 32, 3)
    assert -1e-6 <= mean.min() and mean.max() <= 1 + 1e-6
    np.testing.assert_allclose(draw * 255, np.round(draw * 255), atol=1e-3)  # draws are 8-bit values


@pytest.mark.parametrize("architecture, size, likelihood", [
    ("conv", 64, "logistic_mixture"),
    ("resnet", 32, "logistic_mixture"),
    ("resnet", 64, "gaussian"),
    ("conv", 32, "continuous_bernoulli"),
    ("conv", 64, "bernoulli"),
])
def test_conv_and_resnet_train_on_rgb(architecture, size, likelihood):
    """A few steps lower the -ELBO (same noise before and after) of a tiny network."""
    import tf_keras as keras

    images, _ = coloured_shapes(32, size=size)
    x = images.astype(np.float32) / 255
    if likelihood == "bernoulli":
        x = (x > 0.5).astype(np.float32)
    config = TINY_RGB.replace(image_shape=(size, size, 3), architecture=architecture, likelihood=likelihood)
    keras.utils.set_random_seed(0)
    model = VAE(config)
    model.initialize_output_bias(x)
    before = -model.elbo(x, seed=0).numpy().mean()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x, epochs=5, batch_size=16, verbose=0).history
    after = -model.elbo(x, seed=0).numpy().mean()
    assert np.all(np.isfinite(history["loss"])) and np.isfinite(before)
    assert after < before - 0.01 * size * size * 3, (before, after)  # at least 0.01 nats per dimension
    assert model.reconstruct(x[:2]).shape == (2, size, size, 3)


def test_default_conv_network_takes_64x64_colour():
    """`VAEConfig()` with the conv architecture (conv_filters (32, 64), 10 components, the
    mixture prior and the IWAE objective) on 64x64x3: one finite training step."""
    import tf_keras as keras

    images, _ = coloured_shapes(8, size=64)
    x = images.astype(np.float32) / 255
    model = VAE(VAEConfig(image_shape=(64, 64, 3), architecture="conv", likelihood="logistic_mixture"))
    assert model.decoder_body.output_shape == (None, 64, 64, 10 * 7)
    model.initialize_output_bias(x)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x, epochs=1, batch_size=8, verbose=0).history
    assert np.isfinite(history["loss"][0])
    assert model.sample(2, seed=0).shape == (2, 64, 64, 3)


def test_evaluate_reports_bits_per_dim_of_8_bit_colour(rgb_run, capsys):
    from vae_tf.cli import main

    assert main(["evaluate", rgb_run, "--iwae-samples", "4", "--max-images", "12", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert result["bits_per_dim_defined"] is True and result["num_images"] == 12
    dims_ln2 = 32 * 32 * 3 * math.log(2)
    assert result["iwae_bits_per_dim"] == pytest.approx(result["iwae_nll"] / dims_ln2, rel=1e-12)
    assert result["iwae_bits_per_dim_stderr"] == pytest.approx(result["iwae_nll_stderr"] / dims_ln2, rel=1e-12)
    assert result["neg_elbo_bits_per_dim"] == pytest.approx(result["neg_elbo"] / dims_ln2, rel=1e-12)
    assert 0 < result["iwae_bits_per_dim"] < 8.5  # no worse than a uniform 8-bit model, give or take
    assert "32 x 32 x 3" in result["bits_per_dim_note"]
    assert main(["evaluate", rgb_run, "--iwae-samples", "4", "--max-images", "12"]) == 0
    assert "bits/dim: -ELBO" in capsys.readouterr().out


@pytest.mark.parametrize("likelihood, binary, defined", [
    ("gaussian", False, False),
    ("continuous_bernoulli", False, False),
    ("bernoulli", True, True),
    ("bernoulli", False, False),  # grey levels: a cross-entropy, not a probability
    ("logistic_mixture", False, True),
])
def test_bits_per_dim_only_where_the_likelihood_is_a_probability(likelihood, binary, defined, rng):
    config = VAEConfig(image_shape=(4, 4, 3), hidden_units=(8,), latent_dim=2, likelihood=likelihood,
                       likelihood_components=2, prior="normal")
    x = np.round(rng.random((6, 4, 4, 3)) * 255).astype(np.float32) / 255
    if binary:
        x = (x > 0.5).astype(np.float32)
    result = evaluate_likelihood(VAE(config), x, num_samples=2)
    assert result["bits_per_dim_defined"] is defined
    if defined:
        assert result["iwae_bits_per_dim"] == pytest.approx(result["iwae_nll"] / (48 * math.log(2)))
    else:
        assert result["iwae_bits_per_dim"] is None and result["neg_elbo_bits_per_dim"] is None
        assert "not defined" in result["bits_per_dim_note"]
    json.dumps(result)  # None is null in the JSON of `vae-tf evaluate`


def test_rgb_pictures_are_in_colour_on_white(tmp_path):
    """Solid red, green and blue images keep their colours on a white background; grey
    images stay ink (1) dark on white paper (0)."""
    import matplotlib.image

    from vae_tf import plots

    solid = np.zeros((3, 8, 8, 3), np.float32)
    for i in range(3):
        solid[i, ..., i] = 1.0
    png = matplotlib.image.imread(plots.save_grid(solid, str(tmp_path / "rgb.png"), "rgb", ncols=3))[..., :3]
    for i in range(3):  # each primary colour covers at least one image's area (8x8 pixels, scaled up)
        assert np.sum(np.all(np.abs(png - np.eye(3)[i]) < 0.05, axis=-1)) >= 64, i
    assert np.mean(np.all(png < 0.05, axis=-1)) < 0.01  # black only in the title: white padding
    assert np.all(plots.tile(solid, ncols=3)[0, 0] == 1.0)

    recon = plots.save_reconstructions(solid, solid[::-1], str(tmp_path / "recon.png"), "rgb")
    assert np.sum(np.all(np.abs(matplotlib.image.imread(recon)[..., :3] - [1, 0, 0]) < 0.05, axis=-1)) >= 2 * 64

    grey = np.zeros((2, 8, 8, 1), np.float32)
    grey[0] = 1.0  # one image of solid ink, one blank
    png = matplotlib.image.imread(plots.save_grid(grey, str(tmp_path / "grey.png"), "grey", ncols=2))[..., :3]
    assert np.sum(np.all(png < 0.05, axis=-1)) >= 64  # the ink image is black
    assert np.mean(np.all(png > 0.95, axis=-1)) > 0.5  # the rest is white


def test_rgb_logistic_mixture_exports_and_verifies(rgb_run, tmp_path):
    """SavedModel, the four TFLite decoders and ONNX of a 32x32x3 logistic-mixture decoder,
    each verified within its tolerance by `export_run` (it raises otherwise), reloaded
    here and compared with the live model's mean image."""
    from vae_tf.export import TOLERANCES, export_run, load_exported

    out = str(tmp_path / "rgb_vae")
    manifest = export_run(rgb_run, out)
    assert manifest["image_shape"] == [32, 32, 3]
    for name, entry in manifest["artifacts"].items():
        assert entry["max_abs_diff"] <= TOLERANCES[name], name
    model = load(rgb_run)
    z = np.random.default_rng(1).standard_normal((3, model.config.latent_dim)).astype(np.float32)
    want = model.decode(z).mean().numpy()
    exported = load_exported(out)
    for decoder, tolerance in ((exported.onnx(), TOLERANCES["decoder.onnx"]),
                               (exported.tflite("float32"), TOLERANCES["decoder_float32.tflite"]),
                               (exported.tflite("int8"), TOLERANCES["decoder_int8.tflite"])):
        got = decoder.decode(z)
        assert got.shape == (3, 32, 32, 3)
        assert np.max(np.abs(got - want)) <= tolerance


def test_a_folder_run_samples_reports_and_names_its_classes(rgb_folder, rgb_run, tmp_path, capsys):
    """The rest of the folder-to-pictures path: `sample`, `report` (colour PNGs), and a
    conditional run whose class names come from the folders (`sample --label square`)."""
    from PIL import Image

    from vae_tf.cli import main

    with open(os.path.join(rgb_run, "config.json")) as f:
        saved = json.load(f)
    assert saved["model"]["class_names"] == ["disc", "square"] and saved["train"]["image_size"] == [32, 32]
    assert main(["sample", rgb_run, "--num", "4", "--out", str(tmp_path / "s.png")]) == 0
    picture = np.asarray(Image.open(tmp_path / "s.png").convert("RGB")).astype(int)
    assert (np.abs(picture[..., 0] - picture[..., 1]) > 20).mean() > 0.01  # colour, not grey
    assert main(["report", rgb_run, "--iwae-samples", "2"]) == 0
    assert os.path.exists(os.path.join(rgb_run, "index.html"))
    for name in ("samples.png", "reconstructions.png", "manifold.png"):
        picture = np.asarray(Image.open(os.path.join(rgb_run, "report", name)).convert("RGB")).astype(int)
        assert (np.abs(picture[..., 0] - picture[..., 2]) > 20).mean() > 0.01, name

    conditional = str(tmp_path / "conditional")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"model": {k: v for k, v in TINY_RGB.to_dict().items() if k != "image_shape"}}))
    assert main(["train", "--data", f"images:{rgb_folder}", "--out", conditional, "--config", str(config),
                 "--conditional", "--preprocessing", "continuous", "--epochs", "1", "--batch-size", "32",
                 "--no-pictures"]) == 0
    out = capsys.readouterr().out
    assert "2 classes (disc, square)" in out and "ignored 1 file(s)" in out
    assert main(["sample", conditional, "--num", "4", "--label", "square", "--out", str(tmp_path / "q.png")]) == 0
    assert main(["sample", conditional, "--num", "4", "--label", "triangle", "--out", str(tmp_path / "t.png")]) == 2
    assert "not a class of this model; its classes are disc, square" in capsys.readouterr().err
