"""The discretized logistic mixture likelihood (`DiscretizedLogisticMixture`) against
brute-force numpy in float64: bin probabilities, log_prob, the mean image, samples;
its export-friendly mean in TFLite and ONNX; its head in the VAE; its config checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from vae_tf.config import ConfigError, RunConfig, TrainConfig, VAEConfig
from vae_tf.distributions import DiscretizedLogisticMixture, likelihood_params_per_pixel

MIN_LOG_SCALE = DiscretizedLogisticMixture.MIN_LOG_SCALE
MAX_LOG_SCALE = DiscretizedLogisticMixture.MAX_LOG_SCALE


def _params(rng, shape, m, c, loc=(-0.3, 1.3), log_scale=(-5.5, 0.5)):
    """Random parameters [*shape, M (1 + 2C)] in the documented layout."""
    return np.concatenate([
        rng.normal(size=(*shape, m)),
        rng.uniform(*loc, size=(*shape, m * c)),
        rng.uniform(*log_scale, size=(*shape, m * c)),
    ], axis=-1)


def _sigmoid(t):
    e = np.exp(-np.abs(t))  # no overflow; exact in both tails
    return np.where(t >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _bin_probabilities(params, c):
    """Brute force in float64: (weights [..., M], P(bin k | component) [..., M, C, 256]).

    Each bin is F(upper) - F(lower) of the logistic CDF, or S(lower) - S(upper) of its
    survival function right of the location (where the CDF difference would cancel),
    with the edge bins taking the tails."""
    params = np.asarray(params, np.float64)
    m = params.shape[-1] // (1 + 2 * c)
    logits = params[..., :m]
    loc = params[..., m : m + m * c].reshape(*params.shape[:-1], m, c)[..., None]
    log_scale = np.clip(params[..., m + m * c :], MIN_LOG_SCALE, MAX_LOG_SCALE)
    scale = np.exp(log_scale).reshape(*params.shape[:-1], m, c)[..., None]
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    edges = (np.arange(257) - 0.5) / 255.0
    t = (edges - loc) / scale
    cdf, survival = _sigmoid(t), _sigmoid(-t)
    cdf[..., 0], cdf[..., -1] = 0.0, 1.0
    survival[..., 0], survival[..., -1] = 1.0, 0.0
    probs = np.where(t[..., :-1] > 0, survival[..., :-1] - survival[..., 1:], cdf[..., 1:] - cdf[..., :-1])
    return weights, probs


def _brute_log_prob(params, k, c):
    """log p(image) [...] in float64 for integer pixel values k [..., H, W, C]."""
    weights, probs = _bin_probabilities(params, c)
    m = weights.shape[-1]
    index = np.broadcast_to(k[..., None, :, None], (*k.shape[:-1], m, c, 1))
    per_component = np.prod(np.take_along_axis(probs, index, -1)[..., 0], axis=-1)  # [..., H, W, M]
    return np.log((weights * per_component).sum(-1)).sum((-1, -2))


@pytest.mark.parametrize("m, c", [(1, 1), (3, 3), (10, 3)])
def test_log_prob_matches_brute_force(rng, m, c):
    params = _params(rng, (2, 3, 4), m, c)  # scales down to e^-5.5: float64 holds every bin
    k = rng.integers(0, 256, size=(2, 3, 4, c))
    k[0, 0, 0], k[0, 0, 1], k[1, 2, 3] = 0, 255, 128  # both edge bins
    p = DiscretizedLogisticMixture(params.astype(np.float32), num_channels=c)
    assert p.batch_shape == [2] and p.event_shape == [3, 4, c]
    got = p.log_prob((k / 255.0).astype(np.float32)).numpy()
    want = _brute_log_prob(params, k, c)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def test_log_prob_is_exact_in_the_far_tails():
    """Bins tens of scales away from every location: the CDF difference underflows in
    float32 (a naive sigmoid(a) - sigmoid(b) gives 0, log 0), the log-sigmoid form does
    not. Compared with the bin probability's asymptote exp(-|t|) (1 - exp(-1/(255 s)))."""
    log_s = -5.0
    s = math.exp(log_s)
    params = np.array([[[[0.0, 0.2, log_s]]]], np.float32)  # M = C = 1, location 0.2
    k = np.array([[[[230]]]])
    got = float(DiscretizedLogisticMixture(params, 1).log_prob(k / np.float32(255.0)).numpy()[0])
    upper = ((230 + 0.5) / 255 - 0.2) / s
    want = -upper + math.log(math.expm1(1 / (255 * s)))  # sigmoid(-t) ~ exp(-t) for t ~ 100
    assert math.isfinite(got) and abs(got - want) < 1e-3, (got, want)
    # Log-scales past the floor and the cap act as the floor and the cap.
    x = np.full([1, 1, 1, 1], 127 / 255, np.float32)
    for bound, past in ((MIN_LOG_SCALE, MIN_LOG_SCALE - 3.0), (MAX_LOG_SCALE, 120.0)):
        at, beyond = (DiscretizedLogisticMixture(np.array([[[[0.0, 0.5, v]]]], np.float32), 1) for v in (bound, past))
        assert at.log_prob(x).numpy() == beyond.log_prob(x).numpy() and at.mean().numpy() == beyond.mean().numpy()


def test_bin_probabilities_sum_to_one_over_coupled_channels(rng):
    """The 256 bins of a one-channel pixel, and the 65,536 value pairs of a two-channel
    pixel (channels coupled through the component), each sum to 1."""
    pairs = np.stack(np.meshgrid(np.arange(256), np.arange(256)), -1).reshape(-1, 2)
    for c, grid in ((1, np.arange(256)[:, None]), (2, pairs)):
        params = _params(rng, (1, 1), 4, c)
        images = (grid / 255.0).astype(np.float32)[:, None, None, :]  # every value, one per image
        params = np.broadcast_to(params, (len(grid), 1, 1, params.shape[-1])).astype(np.float32)
        p = DiscretizedLogisticMixture(params, c)
        total = np.exp(p.log_prob(images).numpy().astype(np.float64)).sum()
        assert abs(total - 1.0) < 1e-4, (c, total)


def test_mean_is_the_clipped_mixture_mean_within_half_a_bin_of_the_discrete_mean(rng):
    """mean() = sum_m pi_m s (softplus(mu/s) - softplus((mu - 1)/s)) (float64 here), and
    differs from the exact mean of the 256 bins, sum_k (k/255) P(k), by at most half a
    bin, over locations inside and outside [0, 1] and scales from the floor up."""
    m, c = 5, 3
    params = _params(rng, (64, 4), m, c, loc=(-0.5, 1.5), log_scale=(-8.0, 4.0))
    got = DiscretizedLogisticMixture(params.astype(np.float32), c).mean().numpy()
    assert got.shape == (64, 4, c)
    weights, probs = _bin_probabilities(params, c)
    discrete = (weights[..., None] * (probs * (np.arange(256) / 255.0)).sum(-1)).sum(-2)
    assert np.max(np.abs(got - discrete)) <= 0.5 / 255 + 1e-5
    loc = params[..., m : m + m * c].reshape(64, 4, m, c)
    s = np.exp(np.clip(params[..., m + m * c :], MIN_LOG_SCALE, MAX_LOG_SCALE)).reshape(64, 4, m, c)
    softplus = lambda t: np.logaddexp(0.0, t)  # noqa: E731
    closed = (weights[..., None] * s * (softplus(loc / s) - softplus((loc - 1) / s))).sum(-2)
    np.testing.assert_allclose(got, closed, atol=2e-6)


def test_samples_are_8_bit_values_with_the_bin_probabilities():
    """Samples lie on k/255, each channel's values follow its marginal bin probabilities,
    and a pixel's channels covary as one component per pixel makes them (channels
    drawn from independent components would not covary)."""
    # M = 3, C = 2: weights, locations (m, c), log-scales (m, c).
    params = np.array([[[[0.0, 0.5, -0.5, 0.2, 0.3, 0.8, 0.7, 0.5, 0.05, -3.0, -4.0, -2.5, -3.5, -6.0, -7.5]]]])
    p = DiscretizedLogisticMixture(params.astype(np.float32), 2)
    x = p.sample(40_000, seed=(4, 2)).numpy()[:, 0, 0, 0]  # [n, 2]
    assert x.shape == (40_000, 2) and x.min() >= 0 and x.max() <= 1
    k = np.round(x * 255)
    np.testing.assert_allclose(x * 255, k, atol=1e-3)
    weights, probs = _bin_probabilities(params, 2)
    weights, probs = weights.reshape(3), probs.reshape(3, 2, 256)
    for channel in range(2):
        want = (weights[:, None] * probs[:, channel]).sum(0)
        freq = np.bincount(k[:, channel].astype(int), minlength=256) / len(k)
        assert np.abs(np.cumsum(freq) - np.cumsum(want)).max() < 0.01  # Kolmogorov distance, ~4 sigma
    means = (probs * (np.arange(256) / 255.0)).sum(-1)  # E[x_c | m], [M, C]
    mean_0, mean_1 = (weights * means[:, 0]).sum(), (weights * means[:, 1]).sum()
    want_cov = (weights * means[:, 0] * means[:, 1]).sum() - mean_0 * mean_1
    got_cov = np.cov(x[:, 0], x[:, 1])[0, 1]
    assert want_cov > 0.03 and abs(got_cov - want_cov) < 2e-3, (got_cov, want_cov)


def test_log_prob_gradients_are_finite_at_the_extremes():
    # M = 2, C = 1: locations far outside [0, 1], log-scales past the floor and the cap.
    params = tf.constant([[[[0.0, 5.0, -3.0, -20.0, 30.0, 120.0]]]], tf.float32)
    x = tf.constant([[[[0.0]], [[1.0]]]], tf.float32)[:, 0]  # [2, 1, 1, 1]: both edge bins
    with tf.GradientTape() as tape:
        tape.watch(params)
        log_prob = DiscretizedLogisticMixture(tf.broadcast_to(params, [2, 1, 1, 6]), 1).log_prob(x)
    grad = tape.gradient(log_prob, params).numpy()
    assert np.all(np.isfinite(log_prob.numpy())) and np.all(np.isfinite(grad))


def test_mean_runs_in_tflite_and_onnx_at_extreme_parameters(tmp_path):
    """The mean graph that every exported decoder contains converts and runs in LiteRT
    and ONNX Runtime, also where mu/s is ~1000 (TFLite lowers softplus to
    log(exp(t) + 1), infinite past t = 88)."""
    import onnxruntime as ort
    import tf2onnx
    from ai_edge_litert.interpreter import Interpreter

    m, c = 3, 3
    spec = tf.TensorSpec([1, 2, 2, m * (1 + 2 * c)], tf.float32, name="params")
    mean = tf.function(lambda params: DiscretizedLogisticMixture(params, c).mean(), input_signature=[spec])
    params = np.zeros([1, 2, 2, m * (1 + 2 * c)], np.float32)
    params[..., m : m + m * c] = np.tile([-0.7, 0.4, 1.9], 3)  # below, inside and above [0, 1]
    params[..., m + m * c :] = np.array([-7.0, -3.0, 4.0] * 3)[::-1]
    params[0, 1, 1, m + m * c :] = -7.0  # the scale floor everywhere: |mu|/s up to ~2,000
    want = mean(params).numpy()

    tflite_model = tf.lite.TFLiteConverter.from_concrete_functions([mean.get_concrete_function()], mean).convert()
    interpreter = Interpreter(model_content=tflite_model)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], params)
    interpreter.invoke()
    got_tflite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    onnx_model, _ = tf2onnx.convert.from_function(mean, input_signature=[spec], opset=17)
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    got_onnx = session.run(None, {session.get_inputs()[0].name: params})[0]
    for got in (got_tflite, got_onnx):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, atol=5e-6)  # export tolerance 1e-5; s up to 20 amplifies rounding
    assert -1e-6 <= want.min() and want.max() <= 1.0 + 1e-6  # in [0, 1] up to float32 rounding


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_decoder_outputs_the_mixture_parameters_of_every_pixel(architecture):
    from vae_tf.model import VAE

    config = VAEConfig(
        image_shape=(8, 8, 3), architecture=architecture, hidden_units=(16,), conv_filters=(4,), dense_units=8,
        latent_dim=2, likelihood="logistic_mixture", likelihood_components=4, prior="normal",
    )
    assert likelihood_params_per_pixel(config) == 4 * 7
    model = VAE(config)
    assert model.decoder_body.output_shape == (None, 8, 8, 28)
    z = tf.random.stateless_normal([2, 3, 2], seed=[1, 1])  # [k, B, D]: decode reshapes to [k, B, 8, 8, 28]
    px = model.decode(z)
    assert px.batch_shape == [2, 3] and px.event_shape == [8, 8, 3]
    x = np.full([3, 8, 8, 3], 0.5, np.float32)
    np.testing.assert_allclose(px.log_prob(x).numpy()[1], model.decode(z[1]).log_prob(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(px.mean().numpy()[0], model.decode(z[0]).mean().numpy(), atol=1e-6)


def test_output_bias_starts_every_component_at_the_pixel_statistics(rng):
    from vae_tf.model import VAE

    config = VAEConfig(
        image_shape=(8, 8, 3), architecture="conv", conv_filters=(4,), dense_units=8, latent_dim=2,
        likelihood="logistic_mixture", likelihood_components=2, prior="normal",
    )
    model = VAE(config)
    images = np.round(rng.beta(2, 5, size=(50, 8, 8, 3)) * 255).astype(np.float32) / 255
    model.initialize_output_bias(images)
    bias = model.decoder_body.get_layer("logits").bias.numpy()
    np.testing.assert_array_equal(bias[:2], 0.0)
    np.testing.assert_allclose(bias[2:8].reshape(2, 3), np.tile(images.mean((0, 1, 2)), (2, 1)), rtol=1e-5)
    std = images.std((0, 1, 2)) * math.sqrt(3) / math.pi
    np.testing.assert_allclose(np.exp(bias[8:]).reshape(2, 3), np.tile(std, (2, 1)), rtol=1e-5)


def test_logistic_mixture_needs_continuous_preprocessing():
    model = VAEConfig(likelihood="logistic_mixture")
    for preprocessing in ("dynamic", "static"):
        with pytest.raises(ConfigError, match="--preprocessing continuous"):
            RunConfig(model=model, train=TrainConfig(preprocessing=preprocessing))
    RunConfig(model=model, train=TrainConfig(preprocessing="continuous"))
    with pytest.raises(ConfigError, match="likelihood_components"):
        VAEConfig(likelihood="logistic_mixture", likelihood_components=0)


def test_cli_names_the_missing_preprocessing_and_reads_partial_config_files(tmp_path, capsys):
    import json

    from vae_tf.cli import build_parser, main, _run_config_from_args

    # (A missing data file too: were the check missing, the command fails fast anyway.)
    missing = f"npz:{tmp_path / 'missing.npz'}"
    assert main(["train", "--out", str(tmp_path / "run"), "--data", missing, "--likelihood", "logistic_mixture"]) == 2
    assert "--preprocessing continuous" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    # A file naming the likelihood and a flag naming the preprocessing: checked together.
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": {"likelihood": "logistic_mixture", "likelihood_components": 3}}))
    args = build_parser().parse_args(["train", "--out", "x", "--config", str(path), "--preprocessing", "continuous"])
    run_config = _run_config_from_args(args)
    assert run_config.model.likelihood_components == 3 and run_config.train.preprocessing == "continuous"
