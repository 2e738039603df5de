"""Post-processing of the lesion mask, decided from cross-validation (as nnU-Net decides its own).

- :mod:`pipeline.postprocessing.lesion_mask`: :class:`LesionPostprocessing` (the foreground threshold and the
  smallest component kept) and :func:`lesion_mask`, the mask of one case's probabilities under it.
- :mod:`pipeline.postprocessing.fitting`: :func:`fit_postprocessing`, the setting that maximises the mean Dice of
  the validation folds' predictions (the default unless a setting beats it).
- :mod:`pipeline.postprocessing.store`: ``postprocessing.json`` beside a training run, written and found.
- :mod:`pipeline.postprocessing.command`: ``python -m pipeline postprocess``, predicting each fold's validation
  cases with that fold's model and fitting the setting (``train`` runs it at its end).
"""

from pipeline.postprocessing.lesion_mask import DEFAULT_POSTPROCESSING, LesionPostprocessing, lesion_mask

__all__ = ["DEFAULT_POSTPROCESSING", "LesionPostprocessing", "lesion_mask"]
