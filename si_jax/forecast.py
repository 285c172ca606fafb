"""``python -m si_jax.forecast RUN_DIR ...``: scores the forecast (``si_jax.programs.forecast``)."""

from si_jax.programs.forecast import main

if __name__ == "__main__":
  main()
