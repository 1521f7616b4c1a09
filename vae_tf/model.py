"""The VAE: one `tf_keras.Model` whose options (likelihood, posterior, prior,
conditioning, objective) are all configuration (`VAEConfig`).

Shapes: images x [B, H, W, C] with pixels in [0, 1]; labels [B] int; latents z
[..., B, D]. Log-densities, KLs and losses are in nats per image.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from vae_tf import losses
from vae_tf.config import UsageError, VAEConfig
from vae_tf.distributions import (
    InverseAutoregressiveFlow,
    MixturePrior,
    likelihood_params_per_pixel,
    log_prob_path_only,
    logistic_mixture_bias,
    make_likelihood_head,
    make_posterior_head,
    posterior_params_size,
    reparameterize,
    standard_normal,
)
from vae_tf.hierarchy import HierarchicalPosterior, LatentHierarchy
from vae_tf.networks import build_decoder_body, build_encoder_body, feature_width

tfd = tfp.distributions


@keras.utils.register_keras_serializable(package="vae_tf")
class VAE(keras.Model):
    """Variational autoencoder with TFP distribution heads and a custom ELBO train step.

    An encoder maps an image x to q(z|x); a latent is drawn as z = mu + sigma * eps
    (the reparameterization trick); a decoder maps z to p(x|z). Training maximizes
    ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)) (or the IWAE bound when
    `config.iwae_samples > 1`, whose encoder gradient is by default the doubly
    reparameterized one, `config.iwae_gradient`). `fit` and `evaluate` report `loss`, `reconstruction`
    (E_q[-log p(x|z)]), `kl` and `elbo`, in nats per image.

    Data for `fit`/`evaluate`: batches of `(images, labels)`; labels are used only by
    a conditional model.

    Args:
        config: `VAEConfig` (or its dict). Defaults to `VAEConfig()`.
        noise_seed: int. Seed of the training noise eps. Training noise is a stateless
            function of (noise_seed, step, position in the global batch), so results
            do not depend on the number of replicas. Defaults to 0.

    Example:

    >>> import numpy as np
    >>> from vae_tf import VAE, VAEConfig
    >>> model = VAE(VAEConfig(architecture="mlp", hidden_units=(64,), latent_dim=2))
    >>> model.compile(optimizer="adam")
    >>> x = (np.random.default_rng(0).random((8, 28, 28, 1)) > 0.5).astype("float32")
    >>> history = model.fit(x, epochs=1, batch_size=4, verbose=0)
    >>> model.sample(3, seed=1).shape
    TensorShape([3, 28, 28, 1])
    >>> model.log_prob(x[:2], num_samples=10).shape
    TensorShape([2])
    """

    def __init__(self, config: VAEConfig | dict | None = None, noise_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if config is None:
            config = VAEConfig()
        elif isinstance(config, dict):
            config = VAEConfig.from_dict(config)
        self.config = config
        self.noise_seed = int(noise_seed)
        c = config

        # === Layers ===
        self.encoder_body = build_encoder_body(c)
        if c.hierarchical:
            self.hierarchy = LatentHierarchy(c.latent_layers, feature_width(c), c.activation, name="hierarchy")
            self.posterior_params = self.posterior_head = None
        else:
            self.hierarchy = None
            self.posterior_params = keras.layers.Dense(
                posterior_params_size(c), dtype="float32", name="posterior_params"
            )
            self.posterior_head = make_posterior_head(c)
        self.flow = (
            InverseAutoregressiveFlow(c.latent_dim, c.flow_layers, c.flow_hidden_units, c.activation, name="iaf")
            if c.posterior == "iaf"
            else None
        )
        self.decoder_body = build_decoder_body(c)
        self.likelihood_head = make_likelihood_head(c)
        self.mixture_prior = (
            MixturePrior(
                c.latent_layers[-1] if c.hierarchical else c.latent_dim, c.prior_components,
                num_classes=c.num_classes if c.conditional else None,
                standard_dims=c.latent_dim - c.latent_layers[-1] if c.hierarchical else 0,
                name="mog_prior",
            )
            if c.prior == "mog"
            else None
        )
        if c.prior == "vamp":
            # VampPrior pseudo-inputs, stored as logits so that sigmoid keeps them in [0, 1].
            self.pseudo_input_logits = self.add_weight(
                "pseudo_input_logits",
                shape=[c.prior_components, *c.image_shape],
                initializer=keras.initializers.RandomNormal(stddev=0.1),
                dtype="float32",
            )

        # === Metrics ===
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.elbo_tracker = keras.metrics.Mean(name="elbo")
        # A hierarchy's KL per layer (kl_1 at the bottom): a layer whose KL stays ~0 has
        # collapsed onto its prior.
        self.layer_kl_trackers = [keras.metrics.Mean(name=f"kl_{i + 1}") for i in range(len(c.latent_layers))]

        self._build_weights()

    # === Building blocks ===

    def _build_weights(self):
        """Creates every variable now, so weights load right after construction."""
        c = self.config
        x = tf.zeros([1, *c.image_shape])
        label = tf.zeros([1], tf.int32) if c.conditional else None
        q = self._posterior_base(x, label)
        z = q.mean()
        if self.flow is not None:
            self.flow.build(z.shape)
            z = self.flow(z)
        self.decode(z, label)
        self.prior(label)
        self.built = True  # every variable exists: count_params() and summary() work

    def initialize_output_bias(self, images) -> None:
        """Starts p(x|z) at the data's mean image: sets the bias of the decoder's logits
        layer to logit(mean pixel) (per pixel for an MLP decoder, per channel for a
        convolutional one). Saves the first few hundred steps of a short run (about 4
        nats of held-out NLL after 30 epochs on 4,500 digits).

        For "logistic_mixture" the bias sets equal weights and spreads the components
        over the quantiles of the pixel values (`distributions.logistic_mixture_bias`).

        Args:
            images: training images [N, H, W, C] in [0, 1].
        """
        if self.config.likelihood == "continuous_bernoulli":
            return  # Its mean is not sigmoid(logits); keep the zero bias.
        layer = self.decoder_body.get_layer("logits")
        if self.config.likelihood == "logistic_mixture":
            per_pixel = layer.bias.shape[0] != likelihood_params_per_pixel(self.config)
            bias = logistic_mixture_bias(images, self.config.likelihood_components, per_pixel)
            layer.bias.assign(bias)
            return
        mean = tf.reduce_mean(tf.cast(tf.convert_to_tensor(images), tf.float32), axis=0)
        if layer.bias.shape.rank == 1 and layer.bias.shape[0] != mean.shape.num_elements():
            mean = tf.reduce_mean(mean, axis=[0, 1])  # one bias per channel
        p = tf.clip_by_value(tf.reshape(mean, [-1]), 1e-3, 1 - 1e-3)
        layer.bias.assign(tf.math.log(p) - tf.math.log1p(-p))

    def _check_images(self, x) -> tf.Tensor:
        x = tf.convert_to_tensor(x)
        if x.dtype != tf.float32:
            x = tf.cast(x, tf.float32)
        expected = tuple(self.config.image_shape)
        if x.shape.rank != 4 or tuple(x.shape[1:]) != expected:
            raise UsageError(
                f"expected images of shape [batch, {', '.join(map(str, expected))}] with pixels in [0, 1], "
                f"got shape {list(x.shape)}."
            )
        return x

    def _label_ids(self, label) -> tf.Tensor:
        """A conditional model's label as int32 (scalar or [batch]), checked."""
        if label is None:
            raise UsageError(
                f"this model is conditional on {self.config.num_classes} classes: pass `label` "
                f"(an int or an int array of shape [batch])."
            )
        label = tf.convert_to_tensor(label)
        if not label.dtype.is_integer:
            raise UsageError(f"label must be an integer class in [0, {self.config.num_classes}), got {label.dtype.name}.")
        return tf.cast(label, tf.int32)

    def _labels(self, label, batch_shape) -> tf.Tensor | None:
        """One-hot labels [..., K] broadcast to `batch_shape`, or None if unconditional."""
        if not self.config.conditional:
            return None
        one_hot = tf.one_hot(self._label_ids(label), self.config.num_classes, dtype=tf.float32)
        return tf.broadcast_to(one_hot, tf.concat([batch_shape, [self.config.num_classes]], 0))

    def _posterior_base(self, x, label=None, training=False) -> tfd.Distribution:
        """The Gaussian head q0(z|x): batch shape [B], event shape [D] (for a latent
        hierarchy, its `HierarchicalPosterior` over the codes)."""
        h = tf.cast(self.encoder_body(x, training=training), tf.float32)
        one_hot = self._labels(label, tf.shape(h)[:1])
        if one_hot is not None:
            h = tf.concat([h, one_hot], axis=-1)
        if self.hierarchy is not None:
            return HierarchicalPosterior(self.hierarchy, self.hierarchy.features(h, training=training), one_hot)
        return self.posterior_head(self.posterior_params(h))

    def _sample_posterior(self, x, label, eps, training=False):
        """Reparameterized posterior samples and their log-density.

        Args:
            x: images [B, H, W, C].
            eps: standard normal noise [k, B, D].

        Returns:
            (q0, z [k, B, D], log q(z|x) [k, B]) where q0 is the Gaussian head.
        """
        q0 = self._posterior_base(x, label, training)
        z0, log_q = reparameterize(q0, eps)
        if self.flow is None:
            return q0, z0, log_q
        flow = self.flow.bijector()
        z = flow.forward(z0)
        return q0, z, log_q - flow.forward_log_det_jacobian(z0, event_ndims=1)

    # === Public API ===

    def encode(self, x, label=None, training=False) -> tfd.Distribution:
        """q(z|x): a distribution with batch shape [B] and event shape [D].

        Diagonal or full-covariance Gaussian; for `posterior="iaf"` the Gaussian pushed
        through the flow (a `tfd.TransformedDistribution`). For a latent hierarchy a
        `hierarchy.HierarchicalPosterior` over the codes u (`VAEConfig.latent_layers`):
        ancestral, reparameterized samples; `.layers_given(u)` gives each layer's
        posterior q(z_i | x, z_{>i}) and prior p(z_i | z_{>i}).
        """
        q0 = self._posterior_base(self._check_images(x), label, training)
        if self.flow is None:
            return q0
        return tfd.TransformedDistribution(q0, self.flow.bijector())

    def encode_mean(self, x, label=None) -> tf.Tensor:
        """A deterministic code for x [B, D]: the posterior mean (for "iaf", the flow
        applied to the Gaussian's mean; for a latent hierarchy, each layer's posterior
        mean given the means above it, as a code u)."""
        z = self._posterior_base(self._check_images(x), label).mean()
        return z if self.flow is None else self.flow(z)

    def decode(self, z, label=None, training=False) -> tfd.Distribution:
        """p(x|z): batch shape [...], event shape [H, W, C], for latents z [..., D].

        `.mean()` is the image in [0, 1]; `.log_prob(x)` is in nats per image.
        """
        z = tf.convert_to_tensor(z)
        if z.dtype != tf.float32:
            z = tf.cast(z, tf.float32)
        if z.shape[-1] != self.config.latent_dim:
            raise UsageError(f"expected latents of shape [..., {self.config.latent_dim}], got shape {list(z.shape)}.")
        batch_shape = tf.shape(z)[:-1]
        one_hot = self._labels(label, batch_shape)
        if self.hierarchy is not None:
            z = self.hierarchy(z, one_hot=one_hot)  # the code mapped top-down: [z_1, h_1]
        if one_hot is not None:
            z = tf.concat([z, one_hot], axis=-1)
        if z.shape.rank == 2:
            # [B, D] (every exported decoder): no reshapes, which would cost a batch-1
            # edge decoder a Shape/Slice/Concat/Reshape chain (~20 us in ONNX Runtime).
            return self.likelihood_head(self.decoder_body(z, training=training))
        flat = tf.reshape(z, [-1, z.shape[-1]])
        logits = self.decoder_body(flat, training=training)
        h, w, _ = self.config.image_shape
        logits = tf.reshape(logits, tf.concat([batch_shape, [h, w, likelihood_params_per_pixel(self.config)]], 0))
        return self.likelihood_head(logits)

    def prior(self, label=None) -> tfd.Distribution:
        """p(z) over [D]: N(0, I), a learned mixture of Gaussians, or the VampPrior
        (an equal mixture of the encoder's Gaussian heads at the pseudo-inputs).

        A conditional model with the mixture prior has one mixture per class, p(z|y):
        it needs `label` (int [B]) and returns a distribution with batch shape [B].
        Other priors ignore `label`.
        """
        if self.mixture_prior is not None:
            return self.mixture_prior(label)  # one mixture per class only when conditional
        if self.config.prior == "vamp":
            q = self._posterior_base(tf.sigmoid(self.pseudo_input_logits))
            k = self.config.prior_components
            return tfd.MixtureSameFamily(tfd.Categorical(logits=tf.zeros([k])), q)
        return standard_normal(self.config)

    def sample(self, num_samples: int, seed=None, label=None, mean: bool = True) -> tf.Tensor:
        """Images drawn from the model: z ~ p(z), then x from p(x|z).

        Args:
            num_samples: number of images n.
            seed: int or a pair of ints (stateless); None draws fresh randomness.
            label: class (int or [n] ints) for a conditional model.
            mean: return the mean of p(x|z) (a clean image) rather than a pixel draw.

        Returns:
            images [n, H, W, C] in [0, 1].
        """
        if isinstance(seed, int):
            seed = (seed, 0)
        z_seed, x_seed = (None, None) if seed is None else tfp.random.split_seed(seed, n=2)
        z = self.sample_prior(num_samples, seed=z_seed, label=label)
        px = self.decode(z, label)
        return px.mean() if mean else px.sample(seed=x_seed)

    def sample_prior(self, num_samples: int, seed=None, label=None) -> tf.Tensor:
        """Latents z ~ p(z) (p(z|label) for a class-conditional prior): [n, D].

        Args:
            num_samples: number of latents n.
            seed: a pair of ints (stateless), or None for fresh randomness.
            label: class (int or [n] ints) for a conditional model.
        """
        if self.mixture_prior is not None and self.mixture_prior.num_classes:
            labels = tf.broadcast_to(self._label_ids(label), tf.reshape(num_samples, [1]))
            return self.prior(labels).sample(seed=seed)
        return self.prior().sample(num_samples, seed=seed)

    def reconstruct(self, x, label=None) -> tf.Tensor:
        """Mean of p(x|z) at the posterior's deterministic code: [B, H, W, C] in [0, 1]."""
        return self.decode(self.encode_mean(x, label), label).mean()

    def call(self, inputs, training=False):
        """`model(x)` or `model((x, label))` -> reconstruction [B, H, W, C]."""
        x, label = inputs if isinstance(inputs, (tuple, list)) else (inputs, None)
        return self.reconstruct(x, label)

    def elbo(self, x, label=None, num_samples: int = 1, seed=0) -> tf.Tensor:
        """Per-image ELBO [B] in nats, with `num_samples` posterior samples (and the
        analytic KL where it exists)."""
        x = self._check_images(x)
        eps = tf.random.stateless_normal([num_samples, tf.shape(x)[0], self.config.latent_dim], seed=[seed, 0])
        terms = self._terms(x, label, eps, training=False, kl_scale=1.0)
        return terms["elbo"]

    def log_prob(self, x, label=None, num_samples: int = 1000, seed: int = 0, max_latents_per_call: int | None = None):
        """Importance-weighted estimate of log p(x) [B] in nats (Burda et al., 2016):
        log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x).

        A lower bound on log p(x) that tightens as K grows; K=1 is the ELBO. The K
        samples are processed in chunks of at most `max_latents_per_call` latents, so
        large K fits in memory; by default as many latents as make 8,192 x 784
        decoder outputs (8,192 latents of a 28x28x1 model with one output per pixel,
        89 of a 32x32x3 logistic mixture of 10 components).
        """
        x = self._check_images(x)
        if num_samples <= 0:
            raise UsageError(f"num_samples must be positive, got {num_samples}.")
        if max_latents_per_call is None:
            h, w, _ = self.config.image_shape
            max_latents_per_call = max(1, 8192 * 784 // (h * w * likelihood_params_per_pixel(self.config)))
        label_t = None if label is None else tf.convert_to_tensor(label, tf.int32)
        batch = int(x.shape[0])
        chunk = max(1, min(num_samples, max_latents_per_call // max(batch, 1)))
        return self._log_prob_fn(x, label_t, tf.constant(num_samples), tf.constant(chunk), tf.constant(seed))

    @tf.function(reduce_retracing=True)
    def _log_prob_fn(self, x, label, num_samples, chunk, seed):
        c = self.config
        batch = tf.shape(x)[0]
        q0 = self._posterior_base(x, label)
        prior = self.prior(label)
        flow = None if self.flow is None else self.flow.bijector()
        num_chunks = (num_samples + chunk - 1) // chunk
        running = tf.fill([batch], -math.inf)
        for i in tf.range(num_chunks):
            # The noise of sample k depends on (seed, k) alone, so the estimate does not
            # depend on the chunking (max_latents_per_call).
            index = i * chunk + tf.range(chunk)
            eps = tf.map_fn(
                lambda k: tf.random.stateless_normal([batch, c.latent_dim], seed=tf.stack([seed, k])),
                index,
                fn_output_signature=tf.float32,
            )
            z0, log_q = reparameterize(q0, eps)
            z = z0
            if flow is not None:
                z = flow.forward(z0)
                log_q -= flow.forward_log_det_jacobian(z0, event_ndims=1)
            log_w = self.decode(z, label).log_prob(x) + prior.log_prob(z) - log_q
            # Samples past num_samples in the last chunk get weight zero.
            log_w = tf.where((index < num_samples)[:, None], log_w, -math.inf)
            running = tf.reduce_logsumexp(tf.concat([running[None], log_w], 0), axis=0)
        return running - tf.math.log(tf.cast(num_samples, tf.float32))

    # === Objective ===

    def _terms(self, x, label, eps, training, kl_scale, dreg=False):
        """Per-image terms of the objective, each [B] in nats.

        Returns a dict: `loss` (what is minimized), `reconstruction`
        (E_q[-log p(x|z)]), `kl` (analytic if available, else Monte Carlo) and `elbo`;
        for a latent hierarchy also `kl_1` ... `kl_L`, the KL of each layer (`kl` is
        their sum). With `dreg` (`config.uses_dreg`), also `z` [k, B, D] and `log_w`
        [k, B], the log weights with log q's parameters held constant.
        """
        c = self.config
        layer_kls = []
        if self.hierarchy is not None:
            q0 = self._posterior_base(x, label, training)
            top_prior = None if c.prior == "normal" else self.mixture_prior(label, standard=False)
            z, log_q, layer_kls = q0.sample_terms(eps, top_prior)
            layer_kls = [tf.reduce_mean(kl, axis=0) for kl in layer_kls]
        else:
            q0, z, log_q = self._sample_posterior(x, label, eps, training)
            if dreg:
                log_q = log_prob_path_only(q0, z)  # the same value, its parameters held
        prior = self.prior(label)
        log_pz = prior.log_prob(z)
        log_px_z = self.decode(z, label, training=training).log_prob(x)
        if layer_kls:
            kl = tf.add_n(layer_kls)  # analytic per layer given the layers above
        elif c.posterior != "iaf" and c.prior == "normal":
            kl = tfd.kl_divergence(q0, prior)
        else:
            kl = tf.reduce_mean(log_q - log_pz, axis=0)
        reconstruction = -tf.reduce_mean(log_px_z, axis=0)
        elbo = -(reconstruction + kl)
        if c.iwae_samples > 1:
            log_w = losses.iwae_log_weights(log_px_z, log_pz, log_q, kl_scale)
            loss = -losses.iwae_bound(log_w)
            if c.free_bits > 0:
                # The same-sample estimate, so that k = 1 gives the ELBO's free bits exactly.
                sample_kl = tf.reduce_mean(log_q - log_pz, axis=0)
                loss += kl_scale * losses.free_bits_shortfall(sample_kl, c.free_bits)
        else:
            loss = losses.negative_elbo(log_px_z, losses.apply_free_bits(kl, c.free_bits), kl_scale)
        terms = {"loss": loss, "reconstruction": reconstruction, "kl": kl, "elbo": elbo}
        terms.update({f"kl_{i + 1}": layer_kl for i, layer_kl in enumerate(layer_kls)})
        if dreg:
            terms.update(z=z, log_w=log_w)
        return terms

    def _kl_scale(self):
        return losses.kl_weight(self.optimizer.iterations, self.config.beta, self.config.kl_warmup_steps)

    @staticmethod
    def _unpack(data):
        if isinstance(data, (tuple, list)):
            x = data[0]
            label = data[1] if len(data) > 1 else None
        else:
            x, label = data, None
        return tf.cast(x, tf.float32), label

    def _update_metrics(self, terms):
        self.loss_tracker.update_state(terms["loss"])
        self.reconstruction_tracker.update_state(terms["reconstruction"])
        self.kl_tracker.update_state(terms["kl"])
        self.elbo_tracker.update_state(terms["elbo"])
        for tracker in self.layer_kl_trackers:
            tracker.update_state(terms[tracker.name])
        return {m.name: m.result() for m in self.metrics}

    def _training_noise(self, x):
        """eps [k, b, D] for this replica's slice of the global batch.

        The whole global batch's noise is drawn from (noise_seed, step) and each replica
        takes its rows, so one device and N replicas see the same eps per image.
        """
        ctx = tf.distribute.get_replica_context()
        replica = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
        replicas = ctx.num_replicas_in_sync
        b = tf.shape(x)[0]
        seed = tf.stack([tf.cast(self.noise_seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])
        eps = tf.random.stateless_normal([self.config.iwae_samples, b * replicas, self.config.latent_dim], seed=seed)
        return eps[:, replica * b : (replica + 1) * b]

    def train_step(self, data):
        x, label = self._unpack(data)
        if self.config.uses_dreg:
            return self._dreg_train_step(x, label)
        with tf.GradientTape() as tape:
            terms = self._terms(x, label, self._training_noise(x), training=True, kl_scale=self._kl_scale())
            # Mean over the global batch: gradients summed across replicas are then
            # those of the global-batch mean, whatever the replica count.
            loss = tf.nn.compute_average_loss(terms["loss"])
            loss += tf.nn.scale_regularization_loss(tf.add_n(self.losses)) if self.losses else 0.0
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        return self._update_metrics(terms)

    def inference_and_generative_variables(self):
        """(encoder variables, all other trainable variables): what q(z|x) is made of
        (`encoder_body`, `posterior_params`), and the decoder and prior."""
        encoder = self.encoder_body.trainable_variables + self.posterior_params.trainable_variables
        ids = {id(v) for v in encoder}
        return encoder, [v for v in self.trainable_variables if id(v) not in ids]

    def _dreg_train_step(self, x, label):
        """One step of the IWAE objective with the doubly reparameterized encoder
        gradient (Tucker et al., 2019; `losses.dreg_path_scale`).

        One forward pass and one backward pass through the decoder: the surrogate's
        gradient gives the decoder and prior theirs (the IWAE gradient) and the gradient
        at every latent sample z_i; scaled by `dreg_path_scale`, that flows on through
        z = mu + sigma * eps into the encoder (a second backward pass, through the
        encoder only).
        """
        kl_scale = self._kl_scale()
        encoder, generative = self.inference_and_generative_variables()
        scaled = isinstance(self.optimizer, keras.mixed_precision.LossScaleOptimizer)
        with tf.GradientTape(persistent=True) as tape:
            terms = self._terms(x, label, self._training_noise(x), training=True, kl_scale=kl_scale, dreg=True)
            weights = losses.dreg_weights(terms["log_w"])
            loss = tf.nn.compute_average_loss(losses.dreg_surrogate(terms["log_w"], weights))
            regularization = tf.nn.scale_regularization_loss(tf.add_n(self.losses)) if self.losses else 0.0
            loss += regularization
            if scaled:
                loss = self.optimizer.get_scaled_loss(loss)
                regularization = self.optimizer.get_scaled_loss(regularization)
        *generative_grads, dz = tape.gradient(loss, generative + [terms["z"]])
        path = tf.stop_gradient(dz * losses.dreg_path_scale(weights, kl_scale)[..., None])
        encoder_grads = tape.gradient(terms["z"], encoder, output_gradients=path)
        if self.losses:
            encoder_grads = [
                g if r is None else (r if g is None else g + r)
                for g, r in zip(encoder_grads, tape.gradient(regularization, encoder))
            ]
        del tape
        grads = generative_grads + encoder_grads
        if scaled:
            grads = self.optimizer.get_unscaled_gradients(grads)
        self.optimizer.apply_gradients(
            (g, v) for g, v in zip(grads, generative + encoder) if g is not None
        )
        return self._update_metrics(terms)

    def test_step(self, data):
        x, label = self._unpack(data)
        # The same noise pattern every evaluation pass (a stateless draw from a fixed
        # seed): validation figures are reproducible and differ between epochs only
        # through the weights.
        eps = tf.random.stateless_normal(
            [self.config.iwae_samples, tf.shape(x)[0], self.config.latent_dim],
            seed=tf.constant([self.noise_seed, -1], tf.int64),
        )
        terms = self._terms(x, label, eps, training=False, kl_scale=self._kl_scale())
        return self._update_metrics(terms)

    def make_train_function(self, force=False):
        """Keras' function of `steps_per_execution` train steps, with one difference: the
        loop's outputs exist before the loop. Keras' own leaves them undefined until the
        first step, so AutoGraph traces `train_step` twice (the first iteration, then the
        loop body) for the same computation, a large share of the first epoch's time.
        Single steps, eager runs and parameter-server training keep Keras' own.
        """
        if self.train_function is not None and not force:
            return self.train_function
        try:
            from tf_keras.src.engine.training import _minimum_control_deps, reduce_per_replica
        except ImportError:  # pragma: no cover - another tf_keras layout: Keras' own function
            return super().make_train_function(force)
        spe = self._steps_per_execution
        if (spe is None or int(spe.numpy()) == 1 or self.run_eagerly or self._cluster_coordinator
                or self.autotune_steps_per_execution):
            return super().make_train_function(force)

        def run_step(data):
            outputs = self.train_step(data)
            with tf.control_dependencies(_minimum_control_deps(outputs)):
                self._train_counter.assign_add(1)
            return outputs

        if self.jit_compile:
            run_step = tf.function(run_step, jit_compile=True, reduce_retracing=True)

        def train_function(iterator):
            def body(i, outputs):
                outputs = self.distribute_strategy.run(run_step, args=(next(iterator),))
                outputs = reduce_per_replica(
                    outputs, self.distribute_strategy, reduction=self.distribute_reduction_method
                )
                return i + 1, outputs

            steps = tf.cast(self._steps_per_execution, tf.int32)
            outputs = {metric.name: tf.zeros([], tf.float32) for metric in self.metrics}
            return tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), outputs))[1]

        # No AutoGraph: the loop is written as a while loop, and converting the model's
        # code (which Keras' own function, in an AutoGraph-exempt module, never does)
        # doubled the trace time.
        self.train_tf_function = self.train_function = tf.function(
            train_function, reduce_retracing=True, autograph=False
        )
        return self.train_function

    def make_test_function(self, force=False):
        """The evaluation step, never XLA-compiled: compiling it took 6.5 of the default
        run's first 15.7 s (the first validation pass), and a validation pass over 500
        images then runs 0.1 s either way. `jit_compile` applies to the train step.

        Keras reads `jit_compile` when it traces the function (its first call, and any
        retrace), not when it makes it, so every call runs with it off."""
        if self.test_function is not None and not force:
            return self.test_function
        function = super().make_test_function(force)

        def test_function(*args):
            jit_compile, self._jit_compile = self._jit_compile, False
            try:
                return function(*args)
            finally:
                self._jit_compile = jit_compile

        self.test_function = test_function
        return test_function

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker, self.elbo_tracker,
                *self.layer_kl_trackers]

    # === Config ===

    def get_config(self):
        return {"config": self.config.to_dict(), "noise_seed": self.noise_seed, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
