"""Export stage (installed as vae_tf.export)."""
