"""si_jax: scale-invariant networks trained with weight decay, in JAX.

A reimplementation of Lobacheva et al., "On the Periodic Behavior of Neural Network
Training with Batch Normalization and Weight Decay" (NeurIPS 2021).
"""

__version__ = "0.1.0"

from si_jax import logs as _logs  # noqa: E402
from si_jax.si_groups import find_si_groups, verify_si_groups  # noqa: E402,F401

_logs.warnings_to_stderr()
