"""Offline evaluation: the split every model is compared on (``protocol``), ranking and candidate metrics
(``metrics``), the harness that runs the generative model and every baseline on that split (``harness``)
and the baselines themselves (``baselines``)."""
