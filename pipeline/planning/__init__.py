"""Plans: the dataset fingerprint and the plans derived from it."""
