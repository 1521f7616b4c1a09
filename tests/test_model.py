"""The VAE model: its public methods, the ELBO terms against a hand computation, the
analytic KL against Monte Carlo, log p(x) estimates, config round-trips and mixed
precision. Trained weights come from the session fixture `tiny_model`; tests that
train build their own tiny model and train it for a few steps only."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from vae_tf import VAE, VAEConfig
from vae_tf.data import make_pipeline

METRICS = {"loss", "reconstruction", "kl", "elbo"}
SMALL = VAEConfig(
    architecture="mlp", hidden_units=(32,), latent_dim=4, activation="relu", prior="normal", iwae_samples=1,
    kl_warmup_steps=0,
)


def _log_sigmoid(logits):
    return -np.logaddexp(0.0, -logits)


def _clone(model: VAE) -> VAE:
    """A new VAE from `model.get_config()` holding a copy of its weights."""
    clone = VAE.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    return clone


@pytest.fixture(scope="module")
def digits(heldout_binary):
    """16 held-out binarized digits [16, 28, 28, 1]."""
    return heldout_binary[0][:16]


# === Public API ===


def test_encode_decode_return_distributions_of_the_right_shapes(tiny_model, digits):
    q = tiny_model.encode(digits[:4])
    assert q.batch_shape == [4] and q.event_shape == [8]
    assert np.all(q.stddev().numpy() > 0)
    z = q.sample(seed=1)
    px = tiny_model.decode(z)
    assert px.batch_shape == [4] and px.event_shape == [28, 28, 1]
    mean = px.mean().numpy()
    assert mean.shape == (4, 28, 28, 1) and mean.min() >= 0 and mean.max() <= 1
    log_px = px.log_prob(digits[:4]).numpy()
    assert log_px.shape == (4,) and np.all(log_px < 0)
    # Latents with extra leading dims decode to [k, B] batches.
    assert tiny_model.decode(tf.zeros([3, 4, 8])).batch_shape == [3, 4]


def test_wrong_shapes_raise_errors_that_name_the_expected_shape(tiny_model):
    with pytest.raises(ValueError, match=r"\[batch, 28, 28, 1\]"):
        tiny_model.encode(np.zeros([2, 28, 28], np.float32))
    with pytest.raises(ValueError, match=r"\[\.\.\., 8\]"):
        tiny_model.decode(np.zeros([2, 5], np.float32))


def test_sample_shape_range_and_seed(tiny_model):
    a = tiny_model.sample(6, seed=7).numpy()
    b = tiny_model.sample(6, seed=7).numpy()
    c = tiny_model.sample(6, seed=8).numpy()
    assert a.shape == (6, 28, 28, 1)
    assert a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1
    drawn = tiny_model.sample(6, seed=7, mean=False).numpy()
    assert set(np.unique(drawn)) <= {0.0, 1.0}


def test_reconstruct_resembles_the_input(tiny_model, digits):
    """Trained 4 epochs, reconstructions are far closer to their own input than to
    another digit's (pixel cross-entropy)."""
    recon = np.clip(tiny_model.reconstruct(digits).numpy(), 1e-6, 1 - 1e-6)
    assert recon.shape == digits.shape

    def bce(x, p):
        return -np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=(1, 2, 3))

    own = bce(digits, recon)
    shifted = bce(np.roll(digits, 1, axis=0), recon)
    assert np.mean(own) < 0.7 * np.mean(shifted), (own.mean(), shifted.mean())
    np.testing.assert_array_equal(tiny_model(digits).numpy(), tiny_model.reconstruct(digits).numpy())


# === ELBO terms ===


def _hand_terms(model: VAE, x: np.ndarray, eps: np.ndarray) -> dict[str, np.ndarray]:
    """ELBO terms recomputed in float64 numpy from the posterior parameters and the
    decoder's logits: reconstruction = -sum Bernoulli log-likelihood, KL in closed form."""
    q = model.encode(x)
    mu, sigma = q.mean().numpy().astype(np.float64), q.stddev().numpy().astype(np.float64)
    z = mu + sigma * eps  # [k, B, D]
    k, b, d = z.shape
    logits = model.decoder_body(z.reshape(-1, d).astype(np.float32)).numpy().astype(np.float64)
    logits = logits.reshape(k, b, -1)
    xf = x.reshape(1, b, -1).astype(np.float64)
    log_px = np.sum(xf * _log_sigmoid(logits) + (1 - xf) * _log_sigmoid(-logits), axis=-1)  # [k, B]
    reconstruction = -log_px.mean(axis=0)
    kl = 0.5 * np.sum(mu**2 + sigma**2 - 1.0 - 2.0 * np.log(sigma), axis=-1)
    return {"reconstruction": reconstruction, "kl": kl, "elbo": -(reconstruction + kl)}


def test_terms_equal_a_hand_computation(tiny_model, digits):
    x = digits[:4]
    eps = np.random.default_rng(0).standard_normal((3, 4, 8))
    terms = tiny_model._terms(tf.constant(x), None, tf.constant(eps, tf.float32), training=False, kl_scale=1.0)
    hand = _hand_terms(tiny_model, x, eps)
    assert hand["kl"].min() > 1.0  # a trained posterior is away from the prior
    for name in ("reconstruction", "kl", "elbo"):
        np.testing.assert_allclose(terms[name].numpy(), hand[name], rtol=0, atol=1e-3, err_msg=name)
    np.testing.assert_allclose(terms["loss"].numpy(), -hand["elbo"], rtol=0, atol=1e-3)


def test_train_step_reports_the_hand_computed_terms(tiny_model, digits):
    """One real train step (learning rate 0, so the weights stay put) reports the batch
    means of the hand-computed terms, with the noise the step draws from
    (noise_seed, optimizer step)."""
    model = _clone(tiny_model)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    x = digits[:4]
    logs = model.train_on_batch(x, return_dict=True)
    assert set(logs) == METRICS
    eps = tf.random.stateless_normal([1, 4, 8], seed=tf.constant([model.noise_seed, 0], tf.int64)).numpy()
    hand = _hand_terms(model, x, eps.astype(np.float64))
    for name in ("reconstruction", "kl", "elbo"):
        np.testing.assert_allclose(logs[name], hand[name].mean(), rtol=0, atol=1e-3, err_msg=name)
    np.testing.assert_allclose(logs["loss"], -hand["elbo"].mean(), rtol=0, atol=1e-3)


@pytest.mark.parametrize("posterior", ["diag", "full"])
def test_analytic_kl_matches_monte_carlo(tiny_model, digits, posterior):
    """The KL the model reports (closed form, TFP) against the mean of
    log q(z|x) - log p(z) over 20,000 posterior samples."""
    if posterior == "diag":
        model = tiny_model
    else:
        keras.utils.set_random_seed(1)
        model = VAE(SMALL.replace(posterior="full", latent_dim=3))
        # Spread the untrained posterior: correlated, away from N(0, I).
        w = model.posterior_params.kernel
        w.assign(w * 20.0)
    x = tf.constant(digits[:4])
    d = model.config.latent_dim
    eps = tf.random.stateless_normal([1, 4, d], seed=[3, 4])  # the analytic KL ignores eps
    terms = model._terms(x, None, eps, training=False, kl_scale=1.0)
    q, prior = model.encode(x), model.prior()
    z = q.sample(20_000, seed=(5, 6))
    log_ratio = (q.log_prob(z) - prior.log_prob(z)).numpy()
    mc, se = log_ratio.mean(0), log_ratio.std(0) / np.sqrt(len(log_ratio))
    kl = terms["kl"].numpy()
    assert kl.min() > 0.5, kl
    assert np.all(np.abs(kl - mc) < 5 * se + 1e-3), (kl, mc, se)


# === log p(x) ===


def test_log_prob_is_at_least_the_elbo(tiny_model, digits):
    """The IWAE estimate with K samples is >= the ELBO on the same K samples (Jensen);
    with the analytic KL in the ELBO the bound holds up to its Monte Carlo noise."""
    log_p = tiny_model.log_prob(digits, num_samples=200, seed=0).numpy()
    elbo = tiny_model.elbo(digits, num_samples=200, seed=0).numpy()
    assert log_p.shape == elbo.shape == (16,)
    assert np.all(log_p >= elbo - 0.5), log_p - elbo
    assert np.mean(log_p - elbo) > 1.0, log_p - elbo


def test_log_prob_does_not_depend_on_chunking(tiny_model, digits):
    """K=50 samples for 8 images in chunks of 7 latents per image (last chunk partial)
    equals one call with all 50."""
    x = digits[:8]
    chunked = tiny_model.log_prob(x, num_samples=50, seed=3, max_latents_per_call=56).numpy()
    whole = tiny_model.log_prob(x, num_samples=50, seed=3, max_latents_per_call=100_000).numpy()
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-3)
    other_seed = tiny_model.log_prob(x, num_samples=50, seed=4).numpy()
    assert np.abs(other_seed - whole).max() > 1e-3  # the seed matters, so the check above can fail
    np.testing.assert_array_equal(tiny_model.log_prob(x, num_samples=50, seed=3).numpy(), whole)


def test_noise_gets_far_lower_log_prob_than_digits(tiny_model, digits):
    noise = (np.random.default_rng(0).random((16, 28, 28, 1)) < 0.5).astype(np.float32)
    log_p_digits = tiny_model.log_prob(digits, num_samples=20).numpy()
    log_p_noise = tiny_model.log_prob(noise, num_samples=20).numpy()
    assert log_p_noise.max() < log_p_digits.min() - 100, (log_p_noise.max(), log_p_digits.min())


def test_log_prob_rejects_non_positive_num_samples(tiny_model, digits):
    with pytest.raises(ValueError, match="num_samples"):
        tiny_model.log_prob(digits[:2], num_samples=0)


# === fit / evaluate ===


def test_a_few_training_steps_lower_the_loss(bundled_splits, heldout_binary):
    """16 Adam steps from scratch on the bundled digits lower the held-out -ELBO by
    well over 50 nats; fit and evaluate report loss, reconstruction, kl and elbo."""
    keras.utils.set_random_seed(0)
    model = VAE(SMALL.replace(hidden_units=(64,)))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), steps_per_execution=8)
    x_test = heldout_binary[0][:200]
    before = model.evaluate(x_test, batch_size=100, verbose=0, return_dict=True)
    ds = make_pipeline(bundled_splits.train_images[:1024], bundled_splits.train_labels[:1024],
                       batch_size=64, preprocessing="static", drop_remainder=True)
    history = model.fit(ds, epochs=1, verbose=0).history
    after = model.evaluate(x_test, batch_size=100, verbose=0, return_dict=True)
    assert set(history) == METRICS and set(before) == METRICS and set(after) == METRICS
    assert int(model.optimizer.iterations.numpy()) == 16
    assert after["loss"] < before["loss"] - 50, (before, after)
    assert after["elbo"] > before["elbo"] + 50


def test_evaluate_elbo_is_minus_reconstruction_plus_kl(tiny_model, heldout_binary, bundled_splits):
    """On a fixed dataset with beta=1 and no free bits: elbo = -(reconstruction + kl)
    and loss = -elbo, in nats per image, and the numbers are those of a trained model:
    well below the same model untrained (decoder bias at the mean training image, as
    training starts it). Measured on these 300 digits: trained 145.4 nats, untrained
    208.3 (KL 2.2); hence -ELBO < 175 and at least 30 below the untrained model."""
    model = _clone(tiny_model)
    model.compile()
    x = heldout_binary[0][:300]
    logs = model.evaluate(x, batch_size=100, verbose=0, return_dict=True)
    assert set(logs) == METRICS
    assert abs(logs["elbo"] + logs["reconstruction"] + logs["kl"]) < 1e-3, logs
    assert abs(logs["loss"] + logs["elbo"]) < 1e-3, logs
    keras.utils.set_random_seed(0)
    untrained = VAE(tiny_model.config, noise_seed=tiny_model.noise_seed)
    untrained.initialize_output_bias(bundled_splits.train_images)
    untrained.compile()
    untrained_elbo = untrained.evaluate(x, batch_size=100, verbose=0, return_dict=True)["elbo"]
    assert 60 < -logs["elbo"] < 175 and logs["kl"] > 5, logs
    assert -logs["elbo"] < -untrained_elbo - 30, (logs, untrained_elbo)


def test_test_step_noise_is_reproducible_and_hand_computable(tiny_model, digits):
    """Validation draws its noise from (noise_seed, -1), statelessly: two evaluations
    agree exactly, and a batch's figures are the hand-computed terms with that noise."""
    model = _clone(tiny_model)
    model.compile()
    x = digits[:4]
    first = model.evaluate(x, batch_size=4, verbose=0, return_dict=True)
    second = model.evaluate(x, batch_size=4, verbose=0, return_dict=True)
    assert first == second
    eps = tf.random.stateless_normal([1, 4, 8], seed=tf.constant([model.noise_seed, -1], tf.int64)).numpy()
    hand = _hand_terms(model, x, eps.astype(np.float64))
    for name in ("reconstruction", "kl", "elbo"):
        np.testing.assert_allclose(first[name], hand[name].mean(), rtol=0, atol=1e-3, err_msg=name)


# === Config ===


def test_get_config_from_config_round_trip(tiny_model, digits):
    config = tiny_model.get_config()
    assert config["config"] == tiny_model.config.to_dict()
    clone = _clone(tiny_model)
    assert clone.config == tiny_model.config and clone.noise_seed == tiny_model.noise_seed
    assert clone.get_config() == config
    np.testing.assert_array_equal(clone.reconstruct(digits).numpy(), tiny_model.reconstruct(digits).numpy())
    # Through Keras' registry too (no pickled closures).
    rebuilt = keras.layers.deserialize(keras.layers.serialize(tiny_model))
    assert isinstance(rebuilt, VAE) and rebuilt.config == tiny_model.config


# === Mixed precision ===


@pytest.fixture(params=["float16", "bfloat16"])
def mixed_policy(request):
    keras.mixed_precision.set_global_policy(f"mixed_{request.param}")
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision_is_bfloat16_on_a_cpu():
    from vae_tf.training import mixed_precision_policy

    assert not tf.config.list_logical_devices("GPU")  # the CPU machines the tests run on
    assert mixed_precision_policy() == "mixed_bfloat16"


def test_mixed_precision_body_low_precision_heads_float32_and_a_train_step_runs(mixed_policy, digits):
    keras.utils.set_random_seed(0)
    model = VAE(SMALL)
    dense_body = [l for l in model.encoder_body.layers if isinstance(l, keras.layers.Dense)]
    assert dense_body and all(l.compute_dtype == mixed_policy for l in dense_body)
    assert model.decoder_body.layers[0].compute_dtype == mixed_policy
    assert model.posterior_params.compute_dtype == "float32"
    assert model.decoder_body.get_layer("logits").compute_dtype == "float32"
    assert all(w.dtype == tf.float32 for w in model.weights)  # variables stay float32
    assert model.encoder_body(digits[:2]).dtype == getattr(tf, mixed_policy)
    px = model.decode(tf.zeros([2, 4]))
    bernoulli = getattr(px, "tensor_distribution", px).distribution
    assert bernoulli.logits.dtype == tf.float32
    assert model.encode(digits[:2]).mean().dtype == tf.float32

    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [w.numpy() for w in model.trainable_weights]
    logs = model.train_on_batch(digits, return_dict=True)
    assert set(logs) == METRICS and all(np.isfinite(v) for v in logs.values()), logs
    changed = [np.any(a != w.numpy()) for a, w in zip(before, model.trainable_weights)]
    assert all(changed)


@pytest.mark.parametrize("channels", [1, 3])
def test_image_conv2d_equals_conv2d_with_and_without_xla(channels):
    """The decoder's last conv is computed as depthwise + channel sum outside XLA: it
    must give Conv2D's outputs and gradients (same weights), and XLA must still work."""
    from vae_tf.networks import ImageConv2D, edge_forms

    x = tf.constant(np.random.default_rng(channels).normal(size=(4, 14, 14, 16)).astype("float32"))
    ours = ImageConv2D(channels, 3, padding="same")
    plain = keras.layers.Conv2D(channels, 3, padding="same")
    ours(x), plain(x)
    plain.set_weights(ours.get_weights())

    def value_and_grads(layer, jit):
        @tf.function(jit_compile=jit)
        def f(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                loss = tf.reduce_sum(y * tf.sin(y))
            return (y, *tape.gradient(loss, [x, *layer.trainable_weights]))

        return f(x)

    expected = value_and_grads(plain, False)
    for jit in (False, True):
        for got, want in zip(value_and_grads(ours, jit), expected):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    # Outside XLA the graph really is the depthwise form.
    graph = tf.function(ours).get_concrete_function(x).graph
    assert any(op.type == "DepthwiseConv2dNative" for op in graph.get_operations())
    # The edge form (bias folded in, channel sum as a matmul) gives the same outputs.
    ours.bias.assign(np.random.default_rng(7).normal(size=channels).astype("float32"))
    plain.set_weights(ours.get_weights())
    body = keras.Sequential([keras.layers.InputLayer(input_shape=(14, 14, 16)), ours])
    with edge_forms(body):
        edge = tf.function(body).get_concrete_function(tf.TensorSpec([None, 14, 14, 16]))
    ops = {op.type for op in edge.graph.get_operations()}
    assert "BatchMatMulV2" in ops and "Sum" not in ops, ops
    np.testing.assert_allclose(edge(x).numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_size,stride", [(3, 2), (4, 2), (5, 2), (3, 3), (3, 1), (2, 2)])
def test_up_conv2d_phase_form_equals_the_transposed_conv(kernel_size, stride):
    """Inside `edge_forms` the decoder's transposed convs run as stride-1 phase
    convolutions (the form traced into edge exports): same outputs as
    Conv2DTranspose from the same weights, on even and odd input sizes."""
    from vae_tf.networks import UpConv2D, edge_forms

    rng = np.random.default_rng(kernel_size * 10 + stride)
    for height, width in ((7, 7), (5, 6)):
        layer = UpConv2D(5, kernel_size, strides=stride, padding="same", activation="relu", bias_initializer="random_normal")
        body = keras.Sequential([keras.layers.InputLayer(input_shape=(height, width, 4)), layer])
        plain = keras.layers.Conv2DTranspose(5, kernel_size, strides=stride, padding="same", activation="relu")
        x = rng.normal(size=(3, height, width, 4)).astype("float32")
        plain(x)
        plain.set_weights(layer.get_weights())
        want = plain(x).numpy()
        np.testing.assert_array_equal(body(x).numpy(), want)
        with edge_forms(body):
            traced = tf.function(body).get_concrete_function(tf.TensorSpec([None, height, width, 4]))
        assert not layer.edge_form
        ops = {op.type for op in traced.graph.get_operations()}
        assert "Conv2DBackpropInput" not in ops and "Conv2D" in ops, ops
        got = traced(tf.constant(x)).numpy()
        assert got.shape == want.shape == (3, height * stride, width * stride, 5)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
