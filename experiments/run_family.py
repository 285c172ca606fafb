"""Launches every member of an experiment family, analyses the periods, draws the figures.

  python experiments/run_family.py --config=configs/lr_sweep.py:cpu --workdir=runs/lr_sweep

The same program as the ``si-jax-family`` console script (``si_jax.programs.family_main``, where
the outputs are described): WORKDIR/<member>/ runs, summary.json, summary.md and the
family's figures. Rerunning resumes unfinished members and skips finished ones;
--figures_only redraws.
"""

from si_jax.programs import family_main

if __name__ == "__main__":
  family_main.run()
