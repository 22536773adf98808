"""Scoring: how one image's scores are formed (whole, slide, msflip) and how a split's
predictions become one confusion matrix (from a model, or from saved prediction files)."""
