"""Distribution heads and priors, built from TensorFlow Probability.

- posterior head q(z|x): `tfp.layers.IndependentNormal` (diagonal Gaussian) or
  `tfp.layers.MultivariateNormalTriL` (full covariance), optionally followed by an
  inverse autoregressive flow (`InverseAutoregressiveFlow`);
- likelihood head p(x|z): Bernoulli, Gaussian N(sigmoid(f(z)), sigma^2 I), continuous
  Bernoulli, or a discretized logistic mixture over 8-bit values
  (`DiscretizedLogisticMixture`), over the whole image (event shape [H, W, C]);
  `likelihood_params_per_pixel` sizes the decoder output it reads;
- prior p(z): N(0, I) or a learned mixture of Gaussians (`MixturePrior`). The
  VampPrior is assembled by the model, since it runs the encoder on pseudo-inputs.

Every head converts to its mean (`convert_to_tensor_fn=mean`), never to a sample, so
that a head used as a tensor is deterministic; code asks heads for `log_prob`,
`sample` and `mean` explicitly.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from vae_tf.config import VAEConfig

tfd = tfp.distributions
tfb = tfp.bijectors
tfpl = tfp.layers


def posterior_params_size(config: VAEConfig) -> int:
    """Width of the dense layer that feeds the posterior head."""
    if config.posterior == "full":
        return tfpl.MultivariateNormalTriL.params_size(config.latent_dim)
    return tfpl.IndependentNormal.params_size(config.latent_dim)


def make_posterior_head(config: VAEConfig) -> keras.layers.Layer:
    """params [B, posterior_params_size] -> a Gaussian over z with event shape [D].

    For "iaf" this is the Gaussian the flow starts from.
    """
    if config.posterior == "full":
        return tfpl.DistributionLambda(
            _FullCovarianceGaussian(config.latent_dim), convert_to_tensor_fn=tfd.Distribution.mean,
            dtype="float32", name="posterior",
        )
    return tfpl.IndependentNormal(
        config.latent_dim, convert_to_tensor_fn=tfd.Distribution.mean, dtype="float32", name="posterior"
    )


class _FullCovarianceGaussian:
    """params [..., D + D(D+1)/2] -> `tfd.MultivariateNormalTriL` over [D], the layout of
    `tfpl.MultivariateNormalTriL` (loc, then the packed lower triangle), with a scale
    that starts and stays well conditioned:

        L = diag(softplus(l_dd) + 1e-5) + strictly_lower(l) / sqrt(D).

    TFP's layer uses the raw entries below the diagonal: row i of L then holds i
    entries of the diagonal's size, so z_D's variance starts ~D times the diagonal
    one and Adam grows the off-diagonal entries by ~lr each per step; at the default
    5e-3 learning rate they reached 4x the diagonal within 5 steps, the codes were
    noise and the reconstruction stopped improving. Dividing by sqrt(D) gives each row
    a norm comparable to its diagonal entry at the start and slows those entries D-fold.
    """

    def __init__(self, latent_dim: int):
        self.latent_dim = latent_dim

    def __call__(self, params):
        d = self.latent_dim
        loc, packed = params[..., :d], params[..., d:]
        tril = tfp.math.fill_triangular(packed)
        raw_diag = tf.linalg.diag_part(tril)
        lower = (tril - tf.linalg.diag(raw_diag)) * (1.0 / math.sqrt(d))
        scale_tril = lower + tf.linalg.diag(tf.nn.softplus(raw_diag) + 1e-5)
        return tfd.MultivariateNormalTriL(loc=loc, scale_tril=scale_tril)


def reparameterize(q: tfd.Distribution, eps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """z = mu + sigma * eps for a Gaussian head (z = mu + L eps for full covariance),
    and log q(z) of each sample.

    log q(z) = log N(eps; 0, I) - sum_d log |L_dd| is computed from the noise itself,
    exactly, with no triangular solve L^-1 (z - mu). For a full-covariance head that
    solve loses every digit once the scale is ill-conditioned (off-diagonal entries many
    times the diagonal ones, which a 5e-3 learning rate reaches within a few steps):
    its error grows geometrically with D and the KL estimate reached -1e22 in 5 steps.

    Args:
        q: a posterior from `make_posterior_head`, batch shape [B], event shape [D]
            (or a latent hierarchy's `HierarchicalPosterior`, which does this itself).
        eps: standard normal noise [..., B, D].

    Returns:
        z [..., B, D], differentiable with respect to the parameters of q, and
        log q(z) [..., B] in nats.
    """
    if hasattr(q, "reparameterize"):  # `hierarchy.HierarchicalPosterior`
        return q.reparameterize(eps)
    q = getattr(q, "tensor_distribution", q)  # tfp.layers wrap their output in a proxy.
    log_noise = -0.5 * tf.reduce_sum(tf.square(eps), -1) - 0.5 * eps.shape[-1] * math.log(2 * math.pi)
    if isinstance(q, tfd.Independent):
        normal = q.distribution
        scale = normal.scale
        return normal.loc + scale * eps, log_noise - tf.reduce_sum(tf.math.log(scale), -1)
    diag = q.scale.diag_part()
    return q.loc + q.scale.matvec(eps), log_noise - tf.reduce_sum(tf.math.log(tf.abs(diag)), -1)


def log_prob_path_only(q: tfd.Distribution, z: tf.Tensor) -> tf.Tensor:
    """log q(z) [..., B] of a diagonal Gaussian head with its parameters held constant
    for the gradient: only the path through z is differentiated (the doubly
    reparameterized gradient, `losses.dreg_path_scale`). The value is log q(z).

    Args:
        q: a diagonal Gaussian posterior (`make_posterior_head` with posterior="diag"),
            batch shape [B], event shape [D].
        z: samples [..., B, D].
    """
    normal = getattr(q, "tensor_distribution", q).distribution
    loc, scale = tf.stop_gradient(normal.loc), tf.stop_gradient(normal.scale)
    u = (z - loc) / scale
    return (-0.5 * tf.reduce_sum(tf.square(u), -1) - tf.reduce_sum(tf.math.log(scale), -1)
            - 0.5 * z.shape[-1] * math.log(2 * math.pi))


def standard_normal(config: VAEConfig) -> tfd.Distribution:
    """N(0, I) over [D], of the family TFP pairs with the posterior for an analytic KL."""
    zeros = tf.zeros([config.latent_dim])
    if config.posterior == "full":
        return tfd.MultivariateNormalDiag(loc=zeros, scale_diag=tf.ones_like(zeros))
    return tfd.Independent(tfd.Normal(zeros, 1.0), reinterpreted_batch_ndims=1)


class IAFStep(keras.layers.Layer):
    """One inverse autoregressive flow step, z' = (z - m(z)) * exp(-s(z)), with m and
    s from a MADE network (`tfb.AutoregressiveNetwork`), so sampling and the density of
    one's own samples both take a single parallel pass.

    The log-scale is soft-clipped to (-3, 3) to keep early training stable.
    """

    def __init__(self, latent_dim: int, hidden_units: int, activation: str = "swish", **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.latent_dim = latent_dim
        self.hidden_units = hidden_units
        self.activation = activation
        self.made = tfb.AutoregressiveNetwork(
            params=2,
            event_shape=[latent_dim],
            hidden_units=[hidden_units, hidden_units],
            activation=activation,
            kernel_initializer=keras.initializers.VarianceScaling(0.01),
            dtype="float32",
        )

    def build(self, input_shape):
        self.made.build(input_shape)
        super().build(input_shape)

    def _shift_and_log_scale(self, z):
        shift, log_scale = tf.unstack(self.made(z), axis=-1)
        return shift, 3.0 * tf.tanh(log_scale / 3.0)

    def bijector(self) -> tfb.Bijector:
        return tfb.Invert(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=self._shift_and_log_scale))

    def get_config(self):
        config = super().get_config()
        config.update(latent_dim=self.latent_dim, hidden_units=self.hidden_units, activation=self.activation)
        return config


class InverseAutoregressiveFlow(keras.layers.Layer):
    """A stack of `IAFStep`s with order reversals between them (Kingma et al., 2016).

    `bijector()` maps the base posterior sample z0 [..., D] to z [..., D]; its
    `forward_log_det_jacobian(z0, event_ndims=1)` is computed in the same parallel pass.
    """

    def __init__(self, latent_dim: int, num_steps: int, hidden_units: int, activation: str = "swish", **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.latent_dim = latent_dim
        self.num_steps = num_steps
        self.hidden_units = hidden_units
        self.activation = activation
        self.steps = [
            IAFStep(latent_dim, hidden_units, activation, name=f"iaf_step_{i}") for i in range(num_steps)
        ]

    def build(self, input_shape):
        for step in self.steps:
            step.build(input_shape)
        super().build(input_shape)

    def bijector(self) -> tfb.Bijector:
        reverse = tfb.Permute(list(reversed(range(self.latent_dim))))
        parts = []
        for i, step in enumerate(self.steps):
            if i:
                parts.append(reverse)
            parts.append(step.bijector())
        # tfb.Chain applies its list from last to first.
        return tfb.Chain(list(reversed(parts)))

    def call(self, z0):
        return self.bijector().forward(z0)

    def get_config(self):
        config = super().get_config()
        config.update(
            latent_dim=self.latent_dim, num_steps=self.num_steps,
            hidden_units=self.hidden_units, activation=self.activation,
        )
        return config


class DiagonalGaussianMixture(tfd.MixtureSameFamily):
    """`tfd.MixtureSameFamily` of `tfd.MultivariateNormalDiag` components whose
    `log_prob` expands the K quadratic forms into two [N, D] x [D, K] matmuls,

        sum_d (z_d - m_kd)^2 / s_kd^2 = z^2 . (1/s_k^2) - 2 z . (m_k / s_k^2) + sum_d m_kd^2 / s_kd^2,

    instead of broadcasting z against every component ([N, K, D] elementwise): the same
    value to float32 rounding, 1.1 ms instead of 7.5 ms for the 8,100 latents x 16
    components x 32 dimensions of an evaluation chunk. For a mixture with batch shape []
    (as the unconditional prior is); a batch of mixtures (a class-conditional prior
    given labels) uses TFP's broadcasting `log_prob`. Sampling and everything else is
    TFP's.
    """

    def _log_prob(self, x):
        components = self.components_distribution
        loc = tf.convert_to_tensor(components.loc)  # [K, D], or [B, K, D] for a batch of mixtures
        if loc.shape.rank != 2:
            return super()._log_prob(x)
        scale = components.scale.diag_part()  # [K, D]
        precision = tf.math.reciprocal(tf.square(scale))
        x = tf.convert_to_tensor(x, loc.dtype)
        flat = tf.reshape(x, [-1, loc.shape[-1]])
        quadratic = (
            tf.matmul(tf.square(flat), precision, transpose_b=True)
            - 2.0 * tf.matmul(flat, loc * precision, transpose_b=True)
            + tf.reduce_sum(tf.square(loc) * precision, axis=-1)
        )
        dim = tf.cast(tf.shape(loc)[-1], loc.dtype)
        log_normal = -0.5 * quadratic - tf.reduce_sum(tf.math.log(scale), -1) - 0.5 * dim * math.log(2 * math.pi)
        log_weights = tf.nn.log_softmax(self.mixture_distribution.logits_parameter())
        log_prob = tf.reduce_logsumexp(log_normal + log_weights, axis=-1)
        return tf.reshape(log_prob, tf.shape(x)[:-1])


class MixturePrior(keras.layers.Layer):
    """Learned prior: a mixture of K diagonal Gaussians over [D] (locations, scales and
    weights are trainable). `call()` returns a `tfd.MixtureSameFamily`
    (`DiagonalGaussianMixture`).

    With `num_classes`, one such mixture per class, p(z|y) (the prior of a conditional
    VAE): `call(label)` takes int labels [B] and returns their mixtures (batch shape
    [B]). Each class then owns a region of latent space, so a latent drawn from
    p(z|y) decodes to class y whether or not the decoder also reads the label.

    With `standard_dims` S > 0 the mixture is over [S + D]: its first S coordinates are
    N(0, 1) in every component (the lower layers' codes of a latent hierarchy,
    `vae_tf.hierarchy`) and the learned mixture is over the last D.
    """

    def __init__(self, latent_dim: int, num_components: int, num_classes: int | None = None,
                 standard_dims: int = 0, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.latent_dim = latent_dim
        self.num_components = num_components
        self.num_classes = num_classes
        self.standard_dims = int(standard_dims)

    def build(self, input_shape=None):
        classes = [self.num_classes] if self.num_classes else []
        self.locs = self.add_weight(
            "locs", shape=[*classes, self.num_components, self.latent_dim],
            initializer=keras.initializers.RandomNormal(stddev=1.0),
        )
        # softplus(0.5413) = 1: components start as unit Gaussians.
        self.raw_scales = self.add_weight(
            "raw_scales", shape=[*classes, self.num_components, self.latent_dim],
            initializer=keras.initializers.Constant(0.5413),
        )
        self.logits = self.add_weight("logits", shape=[*classes, self.num_components], initializer="zeros")
        super().build(input_shape)

    def call(self, label=None, standard: bool = True):
        """The mixture (batch shape []), or each label's mixture (batch shape [B]) when the
        prior is per class; `label` is ignored otherwise. `standard=False` leaves out the
        `standard_dims` (the mixture over the last D coordinates only)."""
        locs, raw_scales, logits = self.locs, self.raw_scales, self.logits
        if self.num_classes:
            if label is None:
                raise ValueError(
                    f"this prior has one mixture per class ({self.num_classes} classes): pass `label` "
                    "(int labels of shape [batch])."
                )
            label = tf.cast(label, tf.int32)
            locs, raw_scales, logits = (tf.gather(w, label) for w in (locs, raw_scales, logits))
        scales = tf.nn.softplus(raw_scales) + 1e-4
        if self.standard_dims and standard:
            pad = tf.concat([tf.shape(locs)[:-1], [self.standard_dims]], 0)
            locs = tf.concat([tf.zeros(pad), locs], -1)
            scales = tf.concat([tf.ones(pad), scales], -1)
        return DiagonalGaussianMixture(
            mixture_distribution=tfd.Categorical(logits=logits),
            components_distribution=tfd.MultivariateNormalDiag(loc=locs, scale_diag=scales),
        )

    def get_config(self):
        config = super().get_config()
        config.update(latent_dim=self.latent_dim, num_components=self.num_components, num_classes=self.num_classes,
                      standard_dims=self.standard_dims)
        return config


class LogitBernoulli(tfd.Bernoulli):
    """`tfd.Bernoulli` parameterized by logits l, with a cheaper `log_prob`.

    log p(x) = x l - softplus(l), the same value as TFP's
    x (-softplus(-l)) + (1 - x) (-softplus(l)) for every x in [0, 1], in two
    elementwise passes instead of nine. The likelihood of every decoded latent goes
    through it (k per image in IWAE training, 1000 per image in `evaluate`), where those
    passes over [k, B, H, W, C] cost as much as the decoder's matmuls. Logits must be
    finite (they come from a Dense or Conv layer).
    """

    def _log_prob(self, event):
        logits = tf.convert_to_tensor(self.logits)
        return tf.cast(event, logits.dtype) * logits - tf.math.softplus(logits)


def _bernoulli(logits):
    return tfd.Independent(LogitBernoulli(logits=logits, dtype=tf.float32), reinterpreted_batch_ndims=3)


def _continuous_bernoulli(logits):
    return tfd.Independent(tfd.ContinuousBernoulli(logits=logits), reinterpreted_batch_ndims=3)


class _Gaussian:
    """N(sigmoid(logits), sigma^2) per pixel; a class, not a lambda, so it is named."""

    def __init__(self, sigma: float):
        self.sigma = sigma

    def __call__(self, logits):
        return tfd.Independent(tfd.Normal(tf.sigmoid(logits), self.sigma), reinterpreted_batch_ndims=3)


class DiscretizedLogisticMixture(tfd.Distribution):
    """p(x) of 8-bit images with values x = k/255, k in 0..255: per pixel, a mixture of
    M logistics over the 256 bins (PixelCNN++, Salimans et al., 2017; NVAE), event
    shape [H, W, C], pixels independent given the parameters.

    The mixture weights are shared by a pixel's channels: component m has one weight
    pi_m per pixel and its own location mu_mc and scale s_mc per channel, so a pixel's
    channels are coupled through the component (a mixture of products; PixelCNN++'s
    linear dependence of a channel's location on the previous channels is left out):

        log p(pixel) = logsumexp_m [log pi_m + sum_c log P(k_c | mu_mc, s_mc)].

    Bin k covers [(k - 0.5)/255, (k + 0.5)/255]; the edge bins take the tails (bin 0
    everything below 0.5/255, bin 255 everything above 254.5/255), so the 256 bin
    probabilities sum to 1. With a = (k/255 - mu + 0.5/255)/s and b = a - 1/(255 s),
    a bin's probability sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a))
    is computed as the sum of logs

        log P(k) = -softplus(-a) [k < 255] - softplus(b) [k > 0] + log(-expm1(-1/(255 s))) [0 < k < 255],

    exact in float32 in both tails: no CDF difference is formed, so none underflows and
    PixelCNN++'s fallback to the density at the bin centre is not needed.

    `mean()` is the mean of the clipped continuous mixture, in closed form,

        E[clip(Y_c, 0, 1)] = sum_m pi_m s_mc (softplus(mu_mc/s_mc) - softplus((mu_mc - 1)/s_mc)),

    within 0.5/255 of the mean of the 256 bins (rounding to the nearest bin moves a
    draw by at most half a bin) and free of 256-bin sums: the image `decode`, `sample`
    (mean=True), `reconstruct` and every exported decoder return. `sample()` draws a
    component, adds logistic noise to its location and rounds to the nearest bin.

    Args:
        params: float32 [..., H, W, M (1 + 2C)]. Per pixel: M mixture logits, then M*C
            locations mu (index M + m*C + c, in pixel units: 0 is black, 1 is full
            intensity), then M*C log-scales log s (index M + M*C + m*C + c), clipped
            to [`MIN_LOG_SCALE`, `MAX_LOG_SCALE`]. Batch shape [...], event shape
            [H, W, C].
        num_channels: int. C, the channels of an image.

    Example:

    >>> import numpy as np
    >>> p = DiscretizedLogisticMixture(np.zeros([2, 4, 4, 10 * 7], np.float32), num_channels=3)
    >>> p.event_shape, p.batch_shape
    (TensorShape([4, 4, 3]), TensorShape([2]))
    >>> p.log_prob(np.zeros([2, 4, 4, 3], np.float32)).shape
    TensorShape([2])
    """

    MIN_LOG_SCALE = -7.0  # s >= 9e-4, a quarter of a bin (PixelCNN++'s floor)
    # s <= 20: a logistic 20 pixel ranges wide is flat over [0, 1] to 5%, so a broader one
    # adds nothing; the cap keeps s, 1/(255 s) and the mean's s (...) finite and exact.
    MAX_LOG_SCALE = 3.0

    def __init__(self, params, num_channels: int, validate_args: bool = False, allow_nan_stats: bool = True,
                 name: str = "DiscretizedLogisticMixture"):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            self._params = tf.convert_to_tensor(params, dtype_hint=tf.float32, name="params")
            self._num_channels = int(num_channels)
            per_pixel = self._params.shape[-1]
            if per_pixel is None or per_pixel % (1 + 2 * self._num_channels):
                raise ValueError(
                    f"params must have M * (1 + 2 * {self._num_channels}) entries per pixel (last axis), "
                    f"got shape {list(self._params.shape)}."
                )
            self._num_components = per_pixel // (1 + 2 * self._num_channels)
            super().__init__(
                dtype=self._params.dtype, reparameterization_type=tfd.NOT_REPARAMETERIZED,
                validate_args=validate_args, allow_nan_stats=allow_nan_stats, parameters=parameters, name=name,
            )

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict(params=tfp.util.ParameterProperties(event_ndims=3))

    @property
    def params(self) -> tf.Tensor:
        return self._params

    @property
    def num_channels(self) -> int:
        return self._num_channels

    @property
    def num_components(self) -> int:
        return self._num_components

    def _split(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(logits [..., H, W, M], mu [..., H, W, M, C], log s [..., H, W, M, C])."""
        m, c = self._num_components, self._num_channels
        # Slices rather than one tf.split: the full-integer TFLite converter gives a
        # SPLIT_V's outputs one int8 scale and clipped the locations to it.
        p = self._params
        logits, loc, log_scale = p[..., :m], p[..., m : m + m * c], p[..., m + m * c :]
        shape = tf.concat([tf.shape(loc)[:-1], [m, c]], 0)
        loc = tf.reshape(loc, shape)
        log_scale = tf.clip_by_value(tf.reshape(log_scale, shape), self.MIN_LOG_SCALE, self.MAX_LOG_SCALE)
        return logits, loc, log_scale

    def components(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(log pi [..., H, W, M] (normalized), mu [..., H, W, M, C], log s [..., H, W, M, C])."""
        logits, loc, log_scale = self._split()
        return tf.nn.log_softmax(logits, axis=-1), loc, log_scale

    def _batch_shape(self):
        return self._params.shape[:-3]

    def _batch_shape_tensor(self):
        return tf.shape(self._params)[:-3]

    def _event_shape(self):
        return tf.TensorShape([*self._params.shape[-3:-1], self._num_channels])

    def _event_shape_tensor(self):
        return tf.concat([tf.shape(self._params)[-3:-1], [self._num_channels]], 0)

    def _log_prob(self, x):
        log_weights, loc, log_scale = self.components()
        x = tf.convert_to_tensor(x, self.dtype)
        k = tf.clip_by_value(tf.round(x * 255.0), 0.0, 255.0)[..., None, :]  # [..., H, W, 1, C]
        inv_scale = tf.exp(-log_scale)
        upper = (k / 255.0 - loc + 0.5 / 255.0) * inv_scale  # a: the bin's upper edge, standardized
        lower = upper - inv_scale / 255.0  # b
        log_bin = (
            tf.where(k < 255.0, -tf.math.softplus(-upper), 0.0)
            + tf.where(k > 0.0, -tf.math.softplus(lower), 0.0)
            + tf.where((k > 0.0) & (k < 255.0), tf.math.log(-tf.math.expm1(-inv_scale / 255.0)), 0.0)
        )
        log_pixel = tf.reduce_logsumexp(log_weights + tf.reduce_sum(log_bin, -1), axis=-1)  # [..., H, W]
        return tf.reduce_sum(log_pixel, axis=[-2, -1])

    def _mean(self):
        # With softplus(t) = max(t, 0) + log(1 + exp(-|t|)) and s max(mu/s, 0) = max(mu, 0):
        # s (softplus(mu/s) - softplus((mu - 1)/s))
        #   = clip(mu, 0, 1) + s (log(1 + exp(-|mu|/s)) - log(1 + exp(-|mu - 1|/s))),
        # with no overflow (exp of a non-positive number; TFLite lowers softplus to
        # log(exp(t) + 1), infinite past t = 88) and no cancellation of large terms,
        # in ops every runtime has (no log1p: 1 + exp(-|t|) lies in [1, 2]). clip(mu, 0, 1)
        # is written (|mu| - |mu - 1| + 1) / 2, from the same |.| (a max(., 0) would
        # become a RELU that the int8 TFLite converter quantizes, see export/tflite.py).
        logits, loc, log_scale = self._split()
        scale = tf.exp(log_scale)
        inv_scale = tf.exp(-log_scale)
        above_0, below_1 = tf.abs(loc), tf.abs(loc - 1.0)
        tail = lambda distance: tf.math.log(1.0 + tf.exp(-distance * inv_scale))  # noqa: E731
        clipped = 0.5 * (above_0 - below_1 + 1.0) + scale * (tail(above_0) - tail(below_1))
        return tf.reduce_sum(tf.nn.softmax(logits, axis=-1)[..., None] * clipped, axis=-2)

    def _sample_n(self, n, seed=None):
        component_seed, noise_seed = tfp.random.split_seed(seed, n=2)
        log_weights, loc, log_scale = self.components()
        component = tfd.Categorical(logits=log_weights).sample(n, seed=component_seed)  # [n, ..., H, W]
        chosen = tf.one_hot(component, self._num_components, dtype=self.dtype)[..., None]  # [n, ..., H, W, M, 1]
        loc = tf.reduce_sum(chosen * loc, axis=-2)
        scale = tf.reduce_sum(chosen * tf.exp(log_scale), axis=-2)
        u = tf.random.stateless_uniform(tf.shape(loc), seed=noise_seed, minval=1e-5, maxval=1.0 - 1e-5)
        y = loc + scale * (tf.math.log(u) - tf.math.log1p(-u))
        return tf.clip_by_value(tf.round(y * 255.0), 0.0, 255.0) / 255.0


class _LogisticMixture:
    """params [..., H, W, M (1 + 2C)] -> `DiscretizedLogisticMixture` over [H, W, C]."""

    def __init__(self, num_channels: int):
        self.num_channels = num_channels

    def __call__(self, params):
        return DiscretizedLogisticMixture(params, self.num_channels)


def likelihood_params_per_pixel(config: VAEConfig) -> int:
    """Decoder outputs per pixel that the likelihood head reads: C logits for
    "bernoulli", "gaussian" and "continuous_bernoulli"; M (1 + 2C) for
    "logistic_mixture" (M = `likelihood_components`: M weights, M*C locations and
    M*C log-scales)."""
    channels = config.image_shape[-1]
    if config.likelihood == "logistic_mixture":
        return config.likelihood_components * (1 + 2 * channels)
    return channels


def logistic_mixture_bias(images, num_components: int, per_pixel: bool):
    """Starting bias of the decoder's output layer for "logistic_mixture", in the
    `DiscretizedLogisticMixture` layout: equal weights, and every component the
    logistic with the pixels' mean and variance (location the mean, scale
    sqrt(3) std / pi, std at least 1/255); the output layer's random kernel tells
    the components apart.

    Args:
        images: training images [N, H, W, C] in [0, 1] (numpy); statistics of at most
            2,000 of them, evenly strided.
        num_components: M.
        per_pixel: statistics per pixel (an MLP decoder's dense output, bias
            [H * W * P]) or per channel over all pixels (a conv decoder, bias [P]).

    Returns:
        float32 numpy array [H * W * P] or [P], P = M (1 + 2C).
    """
    import numpy as np

    x = np.asarray(images, np.float32)
    x = x[:: max(1, len(x) // 2000)]
    axes = (0,) if per_pixel else (0, 1, 2)
    mean = x.mean(axis=axes)  # [(H, W,) C]
    log_scale = np.log(np.maximum(x.std(axis=axes), 1.0 / 255.0) * math.sqrt(3.0) / math.pi)
    tiled = lambda a: np.repeat(a[..., None, :], num_components, axis=-2).reshape(*a.shape[:-1], -1)  # noqa: E731
    logits = np.zeros([*mean.shape[:-1], num_components], np.float32)
    return np.concatenate([logits, tiled(mean), tiled(log_scale)], axis=-1).astype(np.float32).reshape(-1)


def make_likelihood_head(config: VAEConfig) -> keras.layers.Layer:
    """params [B, H, W, P] -> p(x|z) with event shape [H, W, C] (log_prob in nats per
    image), P = `likelihood_params_per_pixel(config)`: C logits, or the
    `DiscretizedLogisticMixture` parameters."""
    make = {
        "bernoulli": _bernoulli,
        "continuous_bernoulli": _continuous_bernoulli,
        "gaussian": _Gaussian(config.gaussian_sigma),
        "logistic_mixture": _LogisticMixture(config.image_shape[-1]),
    }[config.likelihood]
    return tfpl.DistributionLambda(
        make, convert_to_tensor_fn=tfd.Distribution.mean, dtype="float32", name="likelihood"
    )
