"""Studies that measure recipes with the CLI's own commands: :mod:`pipeline.studies.quality` (the default recipe and
its variants over synthetic seeds; ``scripts/quality_study.py``)."""
