"""Timing scripts: ``python -m benchmarks.<name> [--help]`` from the repository root.

Each prints ratios measured in one run, never asserted; what they share (data,
configs, timing, FLOP counts, the matmul peak, fresh processes) is ``benchmarks.common``.
"""
