"""Model options (posteriors, priors, conditioning, objectives) on the one VAE class:
each trains and lowers the loss; KL estimates, flow densities and objective knobs
behave as their definitions say."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from vae_tf import VAE, VAEConfig
from vae_tf.data import eval_images
from vae_tf.distributions import standard_normal
from vae_tf.losses import kl_weight

tfd = tfp.distributions

SMALL = VAEConfig(
    architecture="mlp", hidden_units=(64,), latent_dim=4, activation="relu",
    flow_hidden_units=32, prior_components=8,
    # The plain ELBO without warm-up and N(0, I), whatever the library default: each
    # test turns on the one option it is about.
    prior="normal", iwae_samples=1, kl_warmup_steps=0,
)


@pytest.fixture(scope="module")
def digits(bundled_splits):
    """1,024 binarized training digits and 256 held-out ones, with labels."""
    s = bundled_splits
    train = eval_images(s.train_images[:1024], "static"), s.train_labels[:1024]
    held = eval_images(s.test_images[:256], "static"), s.test_labels[:256]
    return train, held


def _trained(config: VAEConfig, digits, epochs: int = 1, seed: int = 0) -> VAE:
    (x, y), _ = digits
    keras.utils.set_random_seed(seed)
    model = VAE(config, noise_seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False)
    model.fit(x, y, batch_size=64, epochs=epochs, shuffle=False, verbose=0)
    return model


def _neg_elbo(model: VAE, x, y) -> float:
    y = y if model.config.conditional else None
    return float(-tf.reduce_mean(model.elbo(x, y, num_samples=8, seed=1)))


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"posterior": "full"},
        {"posterior": "iaf"},
        {"prior": "mog"},
        {"prior": "vamp"},
        {"conditional": True},
        {"beta": 4.0},
        {"kl_warmup_steps": 50},
        {"free_bits": 2.0},
        {"iwae_samples": 5},
        {"posterior": "iaf", "prior": "mog", "kl_warmup_steps": 20},
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default",
)
def test_each_option_trains_and_lowers_the_loss(digits, changes):
    """-ELBO of a fixed held-out batch (8 fixed latent samples per image) falls by
    over 100 nats in 16 optimizer steps, from about 545 nats at initialization."""
    config = SMALL.replace(**changes)
    (x, y), (hx, hy) = digits
    keras.utils.set_random_seed(0)
    fresh = VAE(config)
    before = _neg_elbo(fresh, hx, hy)
    model = _trained(config, digits)
    after = _neg_elbo(model, hx, hy)
    assert np.isfinite(after)
    assert after < before - 100.0, f"{changes}: -ELBO {before:.1f} -> {after:.1f} nats"
    # The same class, rebuilt from its config, holds the same weights' shapes.
    rebuilt = VAE.from_config(model.get_config())
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in model.weights]


def _zero_flow(model: VAE) -> None:
    """Sets every MADE weight to zero: each IAF step becomes the identity."""
    for step in model.flow.steps:
        for w in step.made.weights:
            w.assign(tf.zeros_like(w))


@pytest.mark.parametrize(
    "case", ["diag", "full", "iaf_identity", "mog_standard"],
)
def test_monte_carlo_kl_matches_closed_form(digits, case):
    """mean over 20,000 samples of log q(z|x) - log p(z) (the estimator the model
    uses where no closed form exists) agrees with TFP's analytic KL within 4 Monte
    Carlo standard errors, image by image. `iaf_identity` is a flow set to the
    identity (so the closed form of its base applies); `mog_standard` is a one-
    component mixture prior set to N(0, I)."""
    posterior = {"full": "full", "iaf_identity": "iaf"}.get(case, "diag")
    prior = "mog" if case == "mog_standard" else "normal"
    config = SMALL.replace(posterior=posterior, prior=prior, prior_components=1)
    model = _trained(config, digits)  # trained one epoch, so q(z|x) differs between images
    if case == "iaf_identity":
        _zero_flow(model)
    if case == "mog_standard":
        mog = model.mixture_prior
        mog.locs.assign(tf.zeros_like(mog.locs))
        mog.raw_scales.assign(tf.fill(mog.raw_scales.shape, float(np.log(np.expm1(1.0 - 1e-4)))))
    _, (hx, _) = digits
    x = hx[:6]
    q = model.encode(x)
    base = q.distribution if case == "iaf_identity" else q
    exact = tfd.kl_divergence(base, standard_normal(config)).numpy()
    n = 20_000
    z = q.sample(n, seed=(7, 7))
    terms = (q.log_prob(z) - model.prior().log_prob(z)).numpy()  # [n, 6]
    mc = terms.mean(axis=0)
    stderr = terms.std(axis=0) / np.sqrt(n)
    assert np.all(exact > 0.5), exact  # a KL worth estimating
    np.testing.assert_array_less(np.abs(mc - exact), 4 * stderr + 1e-3)


def test_mixture_prior_log_prob_matches_tfp():
    """The mixture prior's matmul-expanded log-density equals TFP's MixtureSameFamily
    (components broadcast against z) to float32 rounding, over batch shapes [], [n] and
    [k, n], for uneven weights, scales and locations."""
    from vae_tf.distributions import MixturePrior

    prior_layer = MixturePrior(latent_dim=5, num_components=7)
    prior_layer.build()
    rng = np.random.default_rng(0)
    prior_layer.locs.assign(rng.normal(0, 2, (7, 5)).astype(np.float32))
    prior_layer.raw_scales.assign(rng.normal(0, 1, (7, 5)).astype(np.float32))
    prior_layer.logits.assign(rng.normal(0, 1, 7).astype(np.float32))
    prior = prior_layer(None)
    reference = tfd.MixtureSameFamily(prior.mixture_distribution, prior.components_distribution)
    for shape in ([5], [300, 5], [4, 60, 5]):
        z = tf.constant(rng.normal(0, 3, shape).astype(np.float32))
        got, want = prior.log_prob(z).numpy(), reference.log_prob(z).numpy()
        assert got.shape == want.shape == tuple(shape[:-1])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_class_conditional_mixture_prior_is_each_class_own_mixture():
    """With `num_classes`, the prior given labels [B] is each label's own mixture:
    log p(z|y) equals TFP's mixture built from that class's weights (z [k, B, D]
    against batch [B]), samples come one per label, and a missing label is an error."""
    from vae_tf.distributions import MixturePrior

    layer = MixturePrior(latent_dim=3, num_components=4, num_classes=5)
    layer.build()
    rng = np.random.default_rng(1)
    layer.locs.assign(rng.normal(0, 2, (5, 4, 3)).astype(np.float32))
    layer.raw_scales.assign(rng.normal(0, 1, (5, 4, 3)).astype(np.float32))
    layer.logits.assign(rng.normal(0, 1, (5, 4)).astype(np.float32))
    labels = np.array([4, 0, 2, 2, 1, 3], np.int32)
    z = rng.normal(0, 3, (7, len(labels), 3)).astype(np.float32)
    got = layer(labels).log_prob(z).numpy()
    assert got.shape == (7, len(labels))
    for i, y in enumerate(labels):
        own = tfd.MixtureSameFamily(
            tfd.Categorical(logits=layer.logits[y]),
            tfd.MultivariateNormalDiag(layer.locs[y], tf.nn.softplus(layer.raw_scales[y]) + 1e-4),
        )
        np.testing.assert_allclose(got[:, i], own.log_prob(z[:, i]).numpy(), rtol=1e-5, atol=1e-4)
    assert layer(labels).sample(seed=(1, 2)).shape == (len(labels), 3)
    with pytest.raises(ValueError, match="pass `label`"):
        layer(None)


def test_flow_posterior_density_integrates_to_one(digits):
    """A 2-D IAF posterior with a visibly non-Gaussian flow: exp(log q(z|x)) summed
    on a 400x400 grid covering its samples integrates to 1 within 2%."""
    config = SMALL.replace(latent_dim=2, posterior="iaf")
    model = VAE(config)
    rng = np.random.default_rng(0)
    for step in model.flow.steps:
        for w in step.made.weights:
            value = tf.constant(rng.normal(0.0, 0.3, w.shape).astype(np.float32))
            # MADE keeps its kernels autoregressive through their masking constraint.
            w.assign(w.constraint(value) if w.constraint is not None else value)
    _, (hx, _) = digits
    q = model.encode(hx[:1])
    samples = q.sample(20_000, seed=(3, 4)).numpy()[:, 0]
    base_samples = q.distribution.sample(20_000, seed=(3, 4)).numpy()[:, 0]
    # The flow moved the distribution (a test of the identity would prove little).
    assert np.abs(samples.std(axis=0) - base_samples.std(axis=0)).max() > 0.05 * base_samples.std(axis=0).max()
    lo, hi = samples.min(axis=0), samples.max(axis=0)
    pad = 0.5 * (hi - lo)
    xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], 400)
    ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], 400)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 1, 2).astype(np.float32)
    density = np.exp(q.log_prob(grid).numpy().astype(np.float64))
    total = density.sum() * (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert abs(total - 1.0) < 0.02, total


def test_iwae_objective_bounds_elbo(digits):
    """With iwae_samples=5 the model trains on the IWAE bound; its k=100 estimate of
    log p(x) is above the ELBO on held-out digits."""
    model = _trained(SMALL.replace(iwae_samples=5), digits)
    _, (hx, _) = digits
    log_p = model.log_prob(hx, num_samples=100).numpy()
    elbo = model.elbo(hx, num_samples=100).numpy()
    assert log_p.mean() > elbo.mean() + 0.5, (log_p.mean(), elbo.mean())


def _mean_kl(model: VAE, x) -> float:
    return float(tf.reduce_mean(tfd.kl_divergence(model.encode(x), model.prior())))


def test_beta_trades_kl_for_reconstruction(digits):
    """After the same 32 steps, beta=0 (no KL penalty) leaves a far larger KL than beta=4."""
    _, (hx, _) = digits
    kl0 = _mean_kl(_trained(SMALL.replace(beta=0.0), digits, epochs=2), hx)
    kl4 = _mean_kl(_trained(SMALL.replace(beta=4.0), digits, epochs=2), hx)
    assert kl0 > 2 * kl4, (kl0, kl4)


def test_free_bits_charges_at_least_the_floor(digits):
    """The loss charges max(KL, free_bits) per image: at least reconstruction +
    free_bits, and exactly that while every image's KL is below the floor (as at
    initialization)."""
    floor = 50.0
    _, (hx, _) = digits
    keras.utils.set_random_seed(0)
    fresh = VAE(SMALL.replace(free_bits=floor))
    fresh.compile(optimizer="adam", jit_compile=False)
    result = fresh.evaluate(hx, batch_size=256, return_dict=True, verbose=0)
    assert 0.1 < result["kl"] < 10.0
    np.testing.assert_allclose(result["loss"], result["reconstruction"] + floor, rtol=1e-5)
    trained = _trained(SMALL.replace(free_bits=floor), digits)
    result = trained.evaluate(hx, batch_size=256, return_dict=True, verbose=0)
    assert result["loss"] >= result["reconstruction"] + floor - 1e-3
    assert result["loss"] >= result["reconstruction"] + result["kl"] - 1e-3
    # A floor below every KL changes nothing: loss = reconstruction + KL.
    trained = _trained(SMALL.replace(free_bits=1e-3), digits)
    result = trained.evaluate(hx, batch_size=256, return_dict=True, verbose=0)
    np.testing.assert_allclose(result["loss"], result["reconstruction"] + result["kl"], rtol=1e-5)


def test_kl_warmup_starts_from_reconstruction_only(digits):
    assert float(kl_weight(tf.constant(0), 1.0, 1000)) == pytest.approx(1e-3)
    assert float(kl_weight(tf.constant(499), 2.0, 1000)) == pytest.approx(1.0)
    assert float(kl_weight(tf.constant(5000), 2.0, 1000)) == pytest.approx(2.0)
    assert float(kl_weight(tf.constant(0), 1.0, 0)) == 1.0
    # The first training step's loss is the reconstruction term alone (KL weight 1e-6).
    (x, y), _ = digits
    keras.utils.set_random_seed(0)
    model = VAE(SMALL.replace(kl_warmup_steps=1_000_000))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False)
    history = model.fit(x[:64], batch_size=64, epochs=1, verbose=0).history
    assert history["kl"][0] > 0.1
    assert history["loss"][0] == pytest.approx(history["reconstruction"][0], abs=1e-3)
