"""Alternative activation backends over TransformerLens' bridge and nnsight.

Each module exposes ``run_batch(model, batch, layers, on_layer)`` with the contract of
:func:`interp.activations.run_hooks_backend`; the heavy libraries are imported only when a backend is chosen.
"""
