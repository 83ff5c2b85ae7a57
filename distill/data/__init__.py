"""Datasets: BEIR layout loading and validation, converters, the sample world, simulated clicks."""
