"""Ranking features for GBDT students (`make features` -> features.parquet)."""
