"""The experiments layer above ``interp/``, ``probes/`` and ``training/``: the seed papers' experiments, their
statistics (:mod:`experiments.stats`) and the claims a report makes from them."""
