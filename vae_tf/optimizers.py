"""Adam and AdamW whose dense updates run as one fused kernel per variable.

tf_keras' Adam writes its update as eight elementwise ops per variable (two moment
updates, a square, a square root, a division, ...), each a pass over the variable's
memory; on a CPU, for the `mlp` preset's 650k parameters, that was about a sixth of a
training step. TensorFlow's `ResourceApplyAdam` kernel (the one the legacy optimizers
call) computes the same update in one multi-threaded pass:

    m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2,
    var <- var - lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

which is tf_keras' dense update term for term (the same `m` and `v` slot variables,
so checkpoints are interchangeable). Sparse gradients, `amsgrad` and `use_ema` keep
tf_keras' own code; AdamW's decoupled weight decay is applied by the base class before
the update, as in tf_keras.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


class _FusedAdamUpdate:
    """`update_step` through `tf.raw_ops.ResourceApplyAdam` for dense gradients."""

    def update_step(self, gradient, variable):
        if isinstance(gradient, tf.IndexedSlices) or self.amsgrad or getattr(self, "adaptive_epsilon", False):
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        local_step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        index = self._index_dict[self._var_key(variable)]
        return tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, local_step),
            beta2_power=tf.pow(beta_2, local_step),
            lr=tf.cast(self.learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=gradient,
            use_locking=False,
        )


@keras.saving.register_keras_serializable(package="vae_tf")
class FusedAdam(_FusedAdamUpdate, keras.optimizers.Adam):
    """`tf_keras.optimizers.Adam` with its dense update fused (module docstring)."""


@keras.saving.register_keras_serializable(package="vae_tf")
class FusedAdamW(_FusedAdamUpdate, keras.optimizers.AdamW):
    """`tf_keras.optimizers.AdamW` with its dense update fused (module docstring)."""
