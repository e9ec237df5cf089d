"""The quality loop: the prediction log, ground-truth feedback and their evaluation."""
