"""Differential privacy: the accountant and the privacy ledger of each model lineage."""
