"""New NumPyro distributions used by probkit's model families.

Each class follows NumPyro's conventions (``support``, ``arg_constraints``, batch and
event shapes, ``validate_args``), so it can be used in any NumPyro model.
"""

from __future__ import annotations

__all__: list[str] = []
