"""Studies that measure recipes with the CLI's own commands: :mod:`pipeline.studies.quality` (the default recipe and
its variants over synthetic seeds; ``scripts/quality_study.py``) and :mod:`pipeline.studies.depth` (FCN-8s, U-Nets of
depth L1-L4 and UNet++ pruned to L1-L4, the UNet++ article's comparison; ``scripts/depth_study.py``), with its
tables (:mod:`~pipeline.studies.depth_report`), figure (:mod:`~pipeline.studies.depth_figure`) and side-by-side
inference timing (:mod:`~pipeline.studies.inference_timing`)."""
