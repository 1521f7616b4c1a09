"""Hierarchical latents: L >= 2 stochastic layers with top-down inference, as in the
Ladder VAE (Sønderby et al., 2016) and NVAE (Vahdat & Kautz, 2020).

Layers are numbered bottom-up, z_1 next to x and z_L at the top, with the sizes
`VAEConfig.latent_layers` = (d_1, ..., d_L) (bottom first).

Generative path (top-down), every conditional a diagonal Gaussian head:

    z_L ~ p(z_L)                                  the model's prior ("normal" or "mog")
    h_{L-1} = f_{L-1}([z_L, y]),  h_i = f_i([z_{i+1}, h_{i+1}])     (deterministic)
    z_i ~ p(z_i | z_{>i}) = N(mu_p(h_i), sigma_p(h_i))              for i < L
    x ~ p(x | z_1, h_1)                           the decoder body reads [z_1, h_1]

Inference shares the top-down path (q(z_i | x, z_{>i})):

    e_1 = encoder features (+ one-hot label),  e_{i+1} = g_i(e_i)   (bottom-up)
    q(z_L | x) = N(params(e_L)),  q(z_i | x, z_{>i}) = N(raw_p(h_i) + params([e_i, h_i]))

(the posterior's pre-softplus parameters are the prior's plus a correction, NVAE's
residual form: at the start q is close to p and the KL of lower layers starts small.)

The model's latent code
-----------------------
What `VAE.decode` takes, `VAE.sample_prior` returns and `VAE.encode` describes is not
the z_i themselves but the prior-standardized code u = (u_1, ..., u_L), shape [..., D], with
D = d_1 + ... + d_L, where u_L = z_L and, for i < L,

    u_i = (z_i - mu_p(h_i)) / sigma_p(h_i),    i.e.    z_i = mu_p(h_i) + sigma_p(h_i) u_i.

z -> u is a triangular bijection (each layer an affine map given the layers above), so
every density ratio the objective uses, p(x|z) p(z) / q(z|x), is the same in u; the
KL of each layer too. Under the prior, u_1 ... u_{L-1} are standard normal and u_L
follows p(z_L): the decoder maps u to an image with no random op (the top-down
reparameterization runs inside it), and an edge client samples new images by drawing
u from that prior, as for a one-layer model.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

tfd = tfp.distributions
tfpl = tfp.layers

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _normal(head_output) -> tuple[tf.Tensor, tf.Tensor]:
    """(loc, scale) of an `IndependentNormal` head's output."""
    d = getattr(head_output, "tensor_distribution", head_output)
    return d.distribution.loc, d.distribution.scale


def _log_noise(eps) -> tf.Tensor:
    """log N(eps; 0, I) summed over the last axis."""
    return -0.5 * tf.reduce_sum(tf.square(eps), -1) - eps.shape[-1] * _HALF_LOG_2PI


def _gaussian_kl(loc_q, scale_q, loc_p, scale_p) -> tf.Tensor:
    """KL(N(loc_q, scale_q) || N(loc_p, scale_p)) summed over the last axis, nats."""
    ratio = tf.square(scale_q / scale_p)
    return 0.5 * tf.reduce_sum(ratio + tf.square((loc_q - loc_p) / scale_p) - 1.0 - tf.math.log(ratio), -1)


def _broadcast_concat(a, b) -> tf.Tensor:
    """[a, b] on the last axis, the leading axes broadcast against each other (tensors
    of one rank must have the same leading shape: no broadcast op in an exported graph)."""
    if a.shape.rank == b.shape.rank:
        return tf.concat([a, b], -1)
    shape = tf.broadcast_dynamic_shape(tf.shape(a)[:-1], tf.shape(b)[:-1])
    a = tf.broadcast_to(a, tf.concat([shape, tf.shape(a)[-1:]], 0))
    b = tf.broadcast_to(b, tf.concat([shape, tf.shape(b)[-1:]], 0))
    return tf.concat([a, b], -1)


@keras.utils.register_keras_serializable(package="vae_tf")
class LatentHierarchy(keras.layers.Layer):
    """The networks of a latent hierarchy: bottom-up features, the top-down path, and
    one diagonal Gaussian head per layer (prior and posterior share it). Float32.

    Args:
        sizes: (d_1, ..., d_L), bottom layer first; L >= 2.
        width: units of every bottom-up and top-down dense layer.
        activation: their activation name.
    """

    def __init__(self, sizes, width: int, activation: str = "swish", **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.sizes = tuple(int(d) for d in sizes)
        self.width = int(width)
        self.activation = activation
        num = len(self.sizes)
        dense = keras.layers.Dense
        # Index i holds layer i + 1's network (bottom_up[i] makes e_{i+2} from e_{i+1}).
        self.bottom_up = [dense(width, activation, dtype="float32", name=f"bottom_up_{i + 2}") for i in range(num - 1)]
        self.top_down = [dense(width, activation, dtype="float32", name=f"top_down_{i + 1}") for i in range(num - 1)]
        self.prior_params = [
            dense(2 * d, dtype="float32", name=f"prior_params_{i + 1}") for i, d in enumerate(self.sizes[:-1])
        ]
        self.posterior_params = [
            dense(2 * d, dtype="float32", name=f"posterior_params_{i + 1}") for i, d in enumerate(self.sizes)
        ]
        self.heads = [
            tfpl.IndependentNormal(d, convert_to_tensor_fn=tfd.Distribution.mean, dtype="float32", name=f"z_{i + 1}")
            for i, d in enumerate(self.sizes)
        ]

    @property
    def num_layers(self) -> int:
        return len(self.sizes)

    def split(self, u) -> list[tf.Tensor]:
        """[..., D] -> [u_1 [..., d_1], ..., u_L [..., d_L]]."""
        return tf.split(u, list(self.sizes), axis=-1)

    def features(self, h, training=False) -> list[tf.Tensor]:
        """Bottom-up features [e_1, ..., e_L] of encoder features h [B, F]."""
        e = [h]
        for layer in self.bottom_up:
            e.append(layer(e[-1], training=training))
        return e

    def _top_down(self, i: int, z_above, h_above) -> tf.Tensor:
        """h_i (i counted from 0 = layer 1) from z_{i+1} and h_{i+1} (or the label at the top)."""
        inputs = z_above if h_above is None else _broadcast_concat(z_above, h_above)
        return self.top_down[i](inputs)

    def _conditionals(self, i: int, z_above, h_above, e=None):
        """h_i, the prior's (loc, scale, raw params) of layer i + 1 given the layer above,
        and, given bottom-up features e_i, the posterior's (loc, scale)."""
        h = self._top_down(i, z_above, h_above)
        raw = self.prior_params[i](h)
        p = _normal(self.heads[i](raw))
        q = None if e is None else _normal(self.heads[i](raw + self.posterior_params[i](_broadcast_concat(e, h))))
        return h, p, q

    def top_posterior(self, e_top) -> tuple[tf.Tensor, tf.Tensor]:
        """(loc, scale) of q(z_L | x), each [B, d_L]."""
        return _normal(self.heads[-1](self.posterior_params[-1](e_top)))

    def decoder_input(self, u, one_hot=None) -> tf.Tensor:
        """The decoder body's input [..., d_1 + width] for codes u [..., D]: [z_1, h_1],
        the code mapped top-down to the bottom layer (deterministic).

        `one_hot` [..., K] (a conditional model's label) enters the top-down path."""
        layers = self.split(u)
        z = layers[-1]
        h = one_hot
        for i in reversed(range(self.num_layers - 1)):
            h, (loc_p, scale_p), _ = self._conditionals(i, z, h)
            z = loc_p + scale_p * layers[i]
        return _broadcast_concat(z, h)

    def call(self, u, one_hot=None):
        return self.decoder_input(u, one_hot)

    def get_config(self):
        config = super().get_config()
        config.update(sizes=list(self.sizes), width=self.width, activation=self.activation)
        return config


class HierarchicalPosterior(tfd.Distribution):
    """q(u | x) over the prior-standardized codes u [D] of a latent hierarchy: batch
    shape [B], event shape [D] (module docstring). Sampling is ancestral and
    reparameterized; `mean()` is the code of the layers' means, top-down (each layer's
    posterior mean given the means above it), what `VAE.encode_mean` returns.

    `layers_given(u)` gives each layer's posterior and prior at a code (the posterior
    of each layer); `sample_terms(eps)` is what training and the IWAE estimate use.

    Args:
        hierarchy: the `LatentHierarchy`.
        features: bottom-up features [e_1, ..., e_L], each [B, width or F].
        one_hot: the label [B, K] of a conditional model, or None.
    """

    def __init__(self, hierarchy: LatentHierarchy, features, one_hot=None, name: str = "HierarchicalPosterior"):
        parameters = dict(locals())
        self._hierarchy = hierarchy
        self._features = list(features)
        self._one_hot = one_hot
        self._top = hierarchy.top_posterior(self._features[-1])
        super().__init__(
            dtype=tf.float32, reparameterization_type=tfd.FULLY_REPARAMETERIZED, validate_args=False,
            allow_nan_stats=True, parameters=parameters, name=name,
        )

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return {}

    @property
    def hierarchy(self) -> LatentHierarchy:
        return self._hierarchy

    def _batch_shape(self):
        return self._top[0].shape[:-1]

    def _batch_shape_tensor(self):
        return tf.shape(self._top[0])[:-1]

    def _event_shape(self):
        return tf.TensorShape([sum(self._hierarchy.sizes)])

    def _event_shape_tensor(self):
        return tf.constant([sum(self._hierarchy.sizes)], tf.int32)

    def _walk(self, z_top, step) -> None:
        """The top-down pass below z_L: for each layer i < L, bottom last, calls
        `step(i, (loc_p, scale_p), (loc_q, scale_q))` with the prior's and the posterior's
        parameters given the layers above, and continues from the z_i it returns."""
        h_net, z, h = self._hierarchy, z_top, self._one_hot
        for i in reversed(range(h_net.num_layers - 1)):
            h, p, q = h_net._conditionals(i, z, h, self._features[i])
            z = step(i, p, q)

    def sample_terms(self, eps, top_prior=None):
        """Reparameterized codes from noise, with their log-density and each layer's KL.

        Args:
            eps: standard normal noise [..., B, D] (layer blocks in the order of u).
            top_prior: p(z_L) over [d_L], for the top layer's KL; None: N(0, I).

        Returns:
            (u [..., B, D], log q(u|x) [..., B], [KL_1, ..., KL_L] each [..., B]). KL_i
            is analytic given the layers above (Gaussians); the top layer's is analytic
            against N(0, I), else the single-sample estimate log q(z_L) - log p(z_L).
        """
        noise = self._hierarchy.split(eps)
        loc, scale = self._top
        z = loc + scale * noise[-1]
        log_q = [_log_noise(noise[-1]) - tf.reduce_sum(tf.math.log(scale), -1)]
        if top_prior is None:
            top_kl = tf.broadcast_to(_gaussian_kl(loc, scale, tf.zeros_like(loc), tf.ones_like(scale)),
                                     tf.shape(log_q[0]))
        else:
            top_kl = log_q[0] - top_prior.log_prob(z)
        codes, kls = [z], [top_kl]

        def step(i, p, q):
            z_i = q[0] + q[1] * noise[i]
            codes.append((z_i - p[0]) / p[1])
            log_q.append(_log_noise(noise[i]) - tf.reduce_sum(tf.math.log(q[1] / p[1]), -1))
            kls.append(_gaussian_kl(q[0], q[1], p[0], p[1]))
            return z_i

        self._walk(z, step)
        return tf.concat(codes[::-1], -1), tf.add_n(log_q), kls[::-1]

    def reparameterize(self, eps) -> tuple[tf.Tensor, tf.Tensor]:
        """(u [..., B, D], log q(u|x) [..., B]) from noise eps [..., B, D]."""
        u, log_q, _ = self.sample_terms(eps)
        return u, log_q

    def layers_given(self, u) -> list[tuple[tfd.Distribution, tfd.Distribution | None]]:
        """[(q(z_i | x, z_{>i}), p(z_i | z_{>i}))] for i = 1..L at codes u [..., B, D],
        each a diagonal Gaussian over z_i (not u_i); the top layer's prior is None (it
        is the model's prior)."""
        layers = self._hierarchy.split(u)
        normal = lambda loc, scale: tfd.Independent(tfd.Normal(loc, scale), 1)  # noqa: E731
        out = [(normal(*self._top), None)]

        def step(i, p, q):
            out.append((normal(*q), normal(*p)))
            return p[0] + p[1] * layers[i]

        self._walk(layers[-1], step)
        return out[::-1]

    def _log_prob(self, u):
        # log q(u_i) = log q(z_i) + log |dz_i/du_i| = log q(z_i) + sum log sigma_p.
        layers = self._hierarchy.split(u)
        log_q = [tfd.Independent(tfd.Normal(*self._top), 1).log_prob(layers[-1])]

        def step(i, p, q):
            z_i = p[0] + p[1] * layers[i]
            log_q.append(tfd.Independent(tfd.Normal(*q), 1).log_prob(z_i) + tf.reduce_sum(tf.math.log(p[1]), -1))
            return z_i

        self._walk(layers[-1], step)
        return tf.add_n(log_q)

    def _sample_n(self, n, seed=None):
        shape = tf.concat([[n], self.batch_shape_tensor(), self.event_shape_tensor()], 0)
        seed = tfp.random.sanitize_seed(seed)
        return self.reparameterize(tf.random.stateless_normal(shape, seed=seed))[0]

    def _mean(self):
        codes = [self._top[0]]

        def step(i, p, q):
            codes.append((q[0] - p[0]) / p[1])
            return q[0]

        self._walk(self._top[0], step)
        return tf.concat(codes[::-1], -1)

    def _stddev(self):
        """The standard deviation of each code coordinate given the layers above at
        their means (exact for the top layer)."""
        stds = [self._top[1]]

        def step(i, p, q):
            stds.append(q[1] / p[1])
            return q[0]

        self._walk(self._top[0], step)
        return tf.concat(stds[::-1], -1)
