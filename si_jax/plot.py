"""``python -m si_jax.plot``: draws runs (``si_jax.programs.plot``)."""

from si_jax.programs.plot import main

if __name__ == "__main__":
  main()
