"""Offline evaluation: the split every model is compared on (``protocol``), ranking and candidate metrics
(``metrics``), the harness that runs the generative
model and every baseline on one split (``harness``) and the baselines themselves (``baselines``)."""
