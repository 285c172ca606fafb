"""Figures of runs and families (matplotlib)."""
