"""``python -m si_jax.main``: trains one run (``si_jax.programs.main``)."""

from si_jax.programs.main import run

if __name__ == "__main__":
  run()
