"""Model families, each a set of NumPyro models plus its natural engine."""
