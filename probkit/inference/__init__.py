"""Inference engines: each takes a NumPyro model (and data) and returns a ``probkit.Result``."""
