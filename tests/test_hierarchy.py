"""Hierarchical latents (`VAEConfig.latent_layers`, `vae_tf.hierarchy`): the
configuration, the prior-standardized code and its densities, training with the KL of
each layer, likelihoods, save/load, conditioning, and the CLI and export end to end."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from vae_tf import VAE, RunConfig, VAEConfig, load
from vae_tf.cli import build_parser, main
from vae_tf.config import ConfigError, UsageError

SMALL = VAEConfig(hidden_units=(64,), latent_layers=(8, 4), activation="relu")


# === Configuration ===


def test_latent_layers_set_the_code_size_and_round_trip():
    c = VAEConfig(latent_layers=(32, 16))
    assert c.hierarchical and c.latent_dim == 48
    assert VAEConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert not VAEConfig().hierarchical and VAEConfig().latent_dim == 32
    # Back to one layer: latent_dim is the user's again.
    assert not c.replace(latent_layers=(), latent_dim=20).hierarchical


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"latent_layers": (32,)}, "at least two"),
        ({"latent_layers": (32, 0)}, "latent_layers"),
        ({"latent_layers": (32, 16), "posterior": "iaf"}, "posterior='iaf'"),
        ({"latent_layers": (32, 16), "posterior": "full"}, "posterior='full'"),
        ({"latent_layers": (32, 16), "prior": "vamp"}, "prior='vamp'"),
    ],
)
def test_bad_hierarchies_are_config_errors(changes, words):
    with pytest.raises(ConfigError, match=words):
        VAEConfig(**changes)


def test_cli_flag_builds_the_hierarchy():
    from vae_tf.cli import _run_config_from_args

    args = build_parser().parse_args(["train", "--out", "r", "--latent-layers", "32,16"])
    assert _run_config_from_args(args).model.latent_layers == (32, 16)
    args = build_parser().parse_args(["train", "--out", "r", "--latent-layers", "32,16", "--latent-dim", "10"])
    with pytest.raises(UsageError, match="--latent-dim 10 disagrees"):
        _run_config_from_args(args)


# === The code u and its densities ===


@pytest.fixture(scope="module")
def small_model():
    tf.keras.utils.set_random_seed(0)
    return VAE(SMALL)


def _z_space(model, q, u, top_prior):
    """log q(z|x) - log p(z) computed in the layers' own coordinates z_i, for codes u."""
    layers = q.layers_given(u)
    parts = model.hierarchy.split(u)
    log_q = layers[-1][0].log_prob(parts[-1])
    log_p = top_prior.log_prob(parts[-1])
    for i, (q_i, p_i) in enumerate(layers[:-1]):
        z_i = p_i.mean() + p_i.stddev() * parts[i]
        log_q += q_i.log_prob(z_i)
        log_p += p_i.log_prob(z_i)
    return log_q - log_p


def test_density_ratio_is_the_same_in_the_code_and_in_the_layers(small_model, heldout_binary):
    """u -> z is a bijection with a triangular Jacobian: log q(u|x) - log p(u) must equal
    log q(z|x) - log p(z) computed layer by layer (what the ELBO and IWAE use)."""
    m = small_model
    x = heldout_binary[0][:6]
    q = m.encode(x)
    u = q.sample(3, seed=(4, 5))
    in_code = q.log_prob(u) - m.prior().log_prob(u)
    in_layers = _z_space(m, q, u, m.mixture_prior(None, standard=False))
    np.testing.assert_allclose(in_code.numpy(), in_layers.numpy(), rtol=1e-4, atol=1e-3)
    # The reparameterized draw reports the density of what it drew.
    eps = tf.random.stateless_normal([3, 6, m.config.latent_dim], seed=[1, 2])
    u2, log_q = q.reparameterize(eps)
    np.testing.assert_allclose(log_q.numpy(), q.log_prob(u2).numpy(), rtol=1e-5, atol=1e-3)


def test_prior_of_the_code_is_standard_below_the_top(small_model):
    m = small_model
    u = tf.random.stateless_normal([7, 12], seed=[3, 3]) * 2.0
    lower, top = u[:, :8], u[:, 8:]
    expected = tf.reduce_sum(-0.5 * lower**2 - 0.5 * np.log(2 * np.pi), -1) + m.mixture_prior(None, standard=False).log_prob(top)
    np.testing.assert_allclose(m.prior().log_prob(u).numpy(), expected.numpy(), rtol=1e-5)
    draws = m.sample_prior(4000, seed=(1, 1)).numpy()
    assert abs(draws[:, :8].mean()) < 0.05 and abs(draws[:, :8].std() - 1) < 0.05


def test_decoder_runs_the_top_down_path(small_model):
    """decode(u) reads u_1 through p(z_1 | z_2): z_1 = mu + sigma u_1, then [z_1, h_1]."""
    m = small_model
    u = tf.random.stateless_normal([5, 12], seed=[6, 7])
    h1 = m.hierarchy.top_down[0](u[:, 8:])
    loc, scale = tf.split(m.hierarchy.prior_params[0](h1), 2, -1)
    z1 = loc + tf.nn.softplus(scale) * u[:, :8]
    expected = m.likelihood_head(m.decoder_body(tf.concat([z1, h1], -1))).mean()
    np.testing.assert_allclose(m.decode(u).mean().numpy(), expected.numpy(), atol=1e-6)
    # Deterministic, and each block of the code changes the image.
    np.testing.assert_array_equal(m.decode(u).mean().numpy(), m.decode(u).mean().numpy())
    for block in (slice(0, 8), slice(8, 12)):
        moved = u.numpy().copy()
        moved[:, block] += 1.0
        assert np.abs(m.decode(moved).mean().numpy() - expected.numpy()).max() > 1e-3


# === Training, likelihoods, save/load ===


def test_training_logs_each_layers_kl_and_learns(tiny_hierarchical_run, heldout_binary):
    with open(os.path.join(tiny_hierarchical_run, "history.json")) as f:
        history = json.load(f)["history"]
    for name in ("kl_1", "kl_2", "val_kl_1", "val_kl_2"):
        assert name in history, sorted(history)
    for kl, k1, k2 in zip(history["kl"], history["kl_1"], history["kl_2"]):
        assert kl == pytest.approx(k1 + k2, rel=1e-4)
    # Both layers carry information (neither collapsed onto its prior).
    assert history["val_kl_1"][-1] > 1.0 and history["val_kl_2"][-1] > 1.0, history
    assert history["loss"][-1] < history["loss"][0] - 20

    model = load(tiny_hierarchical_run)
    x, _ = heldout_binary
    digits = model.log_prob(x[:100], num_samples=50).numpy()
    noise = (np.random.default_rng(0).random((100, 28, 28, 1)) > 0.5).astype("float32")
    assert digits.mean() > -200  # measured about -140 nats after 4 tiny epochs
    assert digits.mean() > model.log_prob(noise, num_samples=50).numpy().mean() + 200
    elbo = model.elbo(x[:100], num_samples=1).numpy()
    assert digits.mean() >= elbo.mean()  # the IWAE bound is tighter than the ELBO


def test_save_and_load_round_trip(tiny_hierarchical_run, heldout_binary, assert_same_model):
    trained = load(tiny_hierarchical_run)
    again = load(tiny_hierarchical_run)
    assert trained.config.latent_layers == (8, 4)
    assert_same_model(trained, again, heldout_binary[0][:8])
    codes = trained.encode_mean(heldout_binary[0][:8]).numpy()
    assert codes.shape == (8, 12) and np.isfinite(codes).all()


def test_conditional_hierarchy_draws_per_class(heldout_binary):
    tf.keras.utils.set_random_seed(1)
    model = VAE(SMALL.replace(conditional=True))
    model.compile(optimizer="adam")
    x, y = heldout_binary
    model.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0)
    labels = np.array([3, 7, 3])
    assert model.prior(labels).batch_shape == [3]
    images = model.sample(3, seed=2, label=labels).numpy()
    assert images.shape == (3, 28, 28, 1) and np.isfinite(images).all()
    # The label reaches the decoder through the top-down path as well as its input.
    u = model.sample_prior(3, seed=(1, 2), label=labels)
    assert np.abs(model.decode(u, 3).mean().numpy() - model.decode(u, 7).mean().numpy()).max() > 1e-4


# === End to end: the CLI and the export ===


def test_cli_train_evaluate_sample_report(tmp_path):
    run = str(tmp_path / "run")
    assert main(["train", "--data", "bundled", "--epochs", "2", "--out", run, "--hidden-units", "64",
                 "--latent-layers", "8,4", "--no-pictures"]) == 0
    assert RunConfig.load(os.path.join(run, "config.json")).model.latent_layers == (8, 4)
    assert main(["evaluate", run, "--iwae-samples", "20", "--max-images", "50", "--json"]) == 0
    assert main(["sample", run, "--num", "16", "--out", str(tmp_path / "s.png")]) == 0
    assert os.path.getsize(tmp_path / "s.png") > 1000
    assert main(["report", run, "--iwae-samples", "5"]) == 0
    assert os.path.exists(os.path.join(run, "index.html")) and os.path.exists(os.path.join(run, "report", "samples.png"))


def test_export_is_deterministic_and_verified(tiny_hierarchical_run, tmp_path):
    import onnx

    from vae_tf.export import export_run

    manifest = export_run(tiny_hierarchical_run, str(tmp_path / "hvae"))
    assert manifest["latent_layers"] == [8, 4] and manifest["latent_dim"] == 12
    assert "2-layer latent hierarchy" in manifest["z"] and "z[:, :8]" in manifest["z"]
    artifacts = manifest["artifacts"]
    for name in ("decoder_float32.tflite", "decoder.onnx"):
        entry = next(v for k, v in artifacts.items() if k.endswith(name) or v.get("path", "").endswith(name))
        assert entry["max_abs_diff"] < 1e-4, (name, entry)
    graph = onnx.load(str(tmp_path / "hvae" / "decoder.onnx")).graph
    assert not [n.op_type for n in graph.node if "Random" in n.op_type]
    # The exported prior is the joint prior over the whole code: components over 12 dims,
    # standard normal in the first 8.
    with open(tmp_path / "hvae" / "explorer.json") as f:
        prior = json.load(f)["prior"]
    loc, scale = np.array(prior["loc"]), np.array(prior["scale_diag"])
    assert loc.shape[-1] == 12 and np.all(loc[:, :8] == 0) and np.all(scale[:, :8] == 1)


def test_conditional_defaults_apply_to_what_the_user_left_unset():
    from vae_tf.cli import _run_config_from_args
    from vae_tf.config import CONDITIONAL_DEFAULTS

    def model(*flags):
        return _run_config_from_args(build_parser().parse_args(["train", "--out", "r", *flags])).model

    default = model("--conditional")
    assert default.latent_layers == CONDITIONAL_DEFAULTS["latent_layers"] == (32, 16)
    assert default.beta == CONDITIONAL_DEFAULTS["beta"] == 2.0
    # ... with the objective its agreement was measured with, not the unconditional default's.
    assert (default.iwae_samples, default.prior_components) == (10, 16) != (VAEConfig().iwae_samples,
                                                                            VAEConfig().prior_components)
    assert model("--conditional", "--iwae-samples", "3", "--prior-components", "8").iwae_samples == 3
    assert model("--conditional", "--iwae-samples", "3", "--prior-components", "8").prior_components == 8
    assert default == VAEConfig.conditional_default()
    # Unconditional models keep VAEConfig's defaults.
    assert model() == VAEConfig()
    # What the user set wins: the latent, beta, a posterior a hierarchy cannot take.
    assert model("--conditional", "--latent-dim", "16").latent_layers == ()
    assert model("--conditional", "--latent-dim", "16").latent_dim == 16
    assert model("--conditional", "--beta", "1").beta == 1.0
    assert model("--conditional", "--latent-layers", "16,8").latent_layers == (16, 8)
    assert model("--conditional", "--posterior", "iaf").latent_layers == ()
    assert model("--conditional", "--preset", "mlp").latent_dim == 20  # the preset chose the latent


def test_conditional_training_defaults_do_not_move_the_digits(tmp_path):
    """`--conditional` trains on the four copies without the shift (samples obeyed their
    label 97.4% of the time unmoved, 94.6% moved), unless a flag, preset or config file
    sets the shift; unconditional runs keep the shift."""
    import json

    from vae_tf import TrainConfig
    from vae_tf.cli import _run_config_from_args

    def train_cfg(*flags):
        return _run_config_from_args(build_parser().parse_args(["train", "--out", "r", *flags])).train

    conditional = train_cfg("--conditional")
    assert (conditional.augment_shift, conditional.augment_copies, conditional.batch_size) == (0, 4, 128)
    assert train_cfg().batch_size == TrainConfig().batch_size == 64
    assert train_cfg("--conditional", "--batch-size", "64").batch_size == 64
    assert conditional == TrainConfig.conditional_default() and TrainConfig.conditional_default(seed=2).seed == 2
    assert train_cfg().augment_shift == 1 and train_cfg() == TrainConfig()
    assert train_cfg("--conditional", "--augment-shift", "1").augment_shift == 1
    assert train_cfg("--conditional", "--preset", "best").augment_shift == 1  # the preset sets it
    # Unmoved copies of grey levels would be identical: one copy, unless the user set them.
    grey = train_cfg("--conditional", "--preprocessing", "continuous")
    assert (grey.augment_shift, grey.augment_copies) == (0, 1)
    assert TrainConfig.conditional_default(preprocessing="static").augment_copies == 1
    assert train_cfg("--conditional", "--preprocessing", "continuous", "--augment-shift", "1").augment_copies == 4
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train": {"augment_shift": 2}}))
    assert train_cfg("--conditional", "--config", str(path)).augment_shift == 2
