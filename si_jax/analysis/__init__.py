"""Analysis of logged runs: phases and destabilizations, theory, invariance checks."""
