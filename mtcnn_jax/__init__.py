"""mtcnn_jax: MTCNN (Zhang et al., IEEE SPL 2016) in JAX/Flax."""

__version__ = "0.1.0"
