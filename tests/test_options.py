"""Model options on the one VAE class do what they claim, on the library defaults
(MLP 400-256, MoG prior, IWAE k=5, KL warm-up 600): free bits raise the loss of an
image whose KL is below the floor, beta scales the KL term, warm-up starts at weight 0,
the VampPrior's pseudo-inputs enter log p(z). That each option trains on the defaults
is tests/test_option_matrix.py. The KL estimators and flow densities are checked
against closed forms on a small model (a check of the mathematics, not of an option).
"""

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

# For the estimator and density checks only: a small model whose closed forms are cheap.
SMALL = VAEConfig(
    architecture="mlp", hidden_units=(64,), latent_dim=4, activation="relu",
    flow_hidden_units=32, prior_components=8, prior="normal", iwae_samples=1, kl_warmup_steps=0,
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


# === Options on the defaults ===


def _default_model(seed: int = 0, iterations: int | None = None, **option) -> VAE:
    """`VAE(VAEConfig(**option))`: the library defaults plus one option, initialized from
    `seed`, compiled, with the optimizer's step set to `iterations` (the KL weight
    follows it; 600 ends the default warm-up)."""
    keras.utils.set_random_seed(seed)
    model = VAE(VAEConfig(**option), noise_seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(5e-3), jit_compile=False)
    model.optimizer.build(model.trainable_variables)
    if iterations is not None:
        model.optimizer.iterations.assign(iterations)
    return model


def _evaluate(model: VAE, x) -> dict:
    return model.evaluate(x, batch_size=len(x), return_dict=True, verbose=0)


def _loss_by_hand(model: VAE, x, kl_weight_value: float, free_bits: float = 0.0) -> float:
    """The IWAE loss that `test_step` reports, recomputed through TFP's own log_prob of
    each distribution (no code shared with `VAE._terms`): the noise eps of
    `test_step`, z = mu + sigma * eps, log w = log p(x|z) + w_kl (log p(z) - log q(z|x)),
    loss = -log mean_k exp(log w) + w_kl max(0, free_bits - mean_k(log q - log p))."""
    c = model.config
    eps = tf.random.stateless_normal(
        [c.iwae_samples, len(x), c.latent_dim], seed=tf.constant([model.noise_seed, -1], tf.int64)
    )
    q = model.encode(x)
    z = q.mean() + q.stddev() * eps
    log_q, log_pz = q.log_prob(z), model.prior().log_prob(z)
    log_px = model.decode(z).log_prob(x)
    log_w = (log_px + kl_weight_value * (log_pz - log_q)).numpy().astype(np.float64)
    iwae = np.log(np.mean(np.exp(log_w - log_w.max(0)), axis=0)) + log_w.max(0)
    shortfall = np.maximum(free_bits - (log_q - log_pz).numpy().mean(0), 0.0)
    return float(np.mean(-iwae + kl_weight_value * shortfall))


@pytest.fixture(scope="module")
def held(digits):
    _, (hx, _) = digits
    return hx[:128]


def test_beta_scales_the_kl_term_on_the_defaults(held):
    """With warm-up over (step 600), the loss of beta = 1 and beta = 4 equals the IWAE
    bound with the KL part of its log weights scaled by beta, recomputed by hand; beta
    = 4 costs more than beta = 1 for the same weights and noise."""
    values = {}
    for beta in (1.0, 4.0):
        model = _default_model(iterations=600, beta=beta)
        got = _evaluate(model, held)["loss"]
        np.testing.assert_allclose(got, _loss_by_hand(model, held, beta), rtol=2e-4)
        values[beta] = got
    assert values[4.0] > values[1.0] + 10.0, values


def test_free_bits_raise_the_loss_below_the_floor_on_the_defaults(held):
    """IWAE free bits (losses.free_bits_shortfall): at step 600 an untrained default model
    (per-image KL ~15 nats) with free_bits = 50 pays 50 - KL more per image than without
    free bits, exactly as recomputed by hand; a floor below every image's KL (1 nat)
    changes nothing."""
    base = _evaluate(_default_model(iterations=600), held)
    model = _default_model(iterations=600, free_bits=50.0)
    high = _evaluate(model, held)
    assert 5.0 < base["kl"] < 40.0, base
    np.testing.assert_allclose(high["loss"], _loss_by_hand(model, held, 1.0, free_bits=50.0), rtol=2e-4)
    np.testing.assert_allclose(high["loss"] - base["loss"], 50.0 - base["kl"], rtol=1e-3)
    low = _evaluate(_default_model(iterations=600, free_bits=1.0), held)
    assert low["loss"] == pytest.approx(base["loss"], rel=1e-6)
    # Scaled like the KL: at step 0 of the warm-up the floor costs nothing.
    assert _evaluate(_default_model(iterations=0, free_bits=50.0), held)["loss"] == pytest.approx(
        _evaluate(_default_model(iterations=0), held)["loss"], rel=1e-6
    )


def test_free_bits_with_one_sample_is_the_elbo_free_bits(held):
    """At iwae_samples = 1 the ELBO path charges reconstruction + max(KL, floor): the
    reported loss is reconstruction + free_bits while every image's KL is below it."""
    result = _evaluate(_default_model(iterations=600, iwae_samples=1, free_bits=50.0), held)
    assert result["kl"] < 50.0
    np.testing.assert_allclose(result["loss"], result["reconstruction"] + 50.0, rtol=1e-5)


def test_kl_warmup_starts_at_weight_zero_on_the_defaults(held):
    """kl_weight is 0 at step 0 and beta from step `warmup_steps` on; the default
    model's loss at step 0 is the IWAE bound of log p(x|z) alone, at step 300 the KL
    enters with weight 0.5."""
    assert float(kl_weight(tf.constant(0), 1.0, 600)) == 0.0
    assert float(kl_weight(tf.constant(300), 2.0, 600)) == pytest.approx(1.0)
    assert float(kl_weight(tf.constant(600), 2.0, 600)) == pytest.approx(2.0)
    assert float(kl_weight(tf.constant(0), 1.0, 0)) == 1.0
    for step, weight in ((0, 0.0), (300, 0.5)):
        model = _default_model(iterations=step)
        result = _evaluate(model, held)
        np.testing.assert_allclose(result["loss"], _loss_by_hand(model, held, weight), rtol=2e-4)
    assert result["kl"] > 1.0  # the KL itself is there, only its weight was 0


def test_vamp_prior_pseudo_inputs_enter_log_pz(digits, held):
    """On the defaults with --prior vamp: log p(z) changes when the pseudo-inputs change,
    and training moves them (their gradient is not zero)."""
    model = _default_model(prior="vamp")
    z = model.encode_mean(held[:16])
    before = model.prior().log_prob(z).numpy()
    start = model.pseudo_input_logits.numpy().copy()
    model.pseudo_input_logits.assign(start + np.random.default_rng(0).normal(0, 1, start.shape).astype(np.float32))
    changed = model.prior().log_prob(z).numpy()
    assert np.abs(changed - before).min() > 1e-3, (before, changed)
    model.pseudo_input_logits.assign(start)
    (x, y), _ = digits
    model.fit(x[:256], batch_size=128, epochs=1, verbose=0)
    moved = np.abs(model.pseudo_input_logits.numpy() - start)
    assert moved.mean() > 1e-3, moved.mean()
