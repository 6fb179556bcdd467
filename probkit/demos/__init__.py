"""Sections of ``probkit demo``: one module per family or engine, each with ``demo()``."""
