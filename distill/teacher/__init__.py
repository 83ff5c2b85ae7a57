"""The teacher: loading cross-encoders, the fast scoring engine, sharded soft labels, training, ensembles."""
