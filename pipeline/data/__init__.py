"""Data layer: dataset layouts, datalists and folds, dataset profiles, fingerprints, the synthetic phantom."""
