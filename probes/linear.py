"""Per-layer linear probes: multinomial logistic regression on activations (``interp.collect_activations``),
held-out accuracy per layer (e.g. harmful vs harmless, or domain classification)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from interp.io import InputError


@dataclass
class ProbeResult:
    layers: list[int]
    train_accuracy: list[float]
    test_accuracy: list[float]
    chance: float  # accuracy of always predicting the majority training class, on the test set
    classes: list
    n_train: int
    n_test: int

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def best_layer(self) -> int:
        return self.layers[max(range(len(self.layers)), key=lambda i: self.test_accuracy[i])]


def fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, *, l2: float = 1e-2, steps: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised multinomial logistic regression by L-BFGS. ``x``: ``[n, d]``, ``y``: ``[n]`` → (W ``[d, k]``, b ``[k]``)."""
    if x.dim() != 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise InputError(f"fit_logistic needs x [n, d] and y [n]; got x {tuple(x.shape)}, y {tuple(y.shape)}")
    if len(y) and not (0 <= int(y.min()) and int(y.max()) < n_classes):
        raise InputError(f"labels must lie in 0…{n_classes - 1}; got {int(y.min())}…{int(y.max())}")
    x = x.double()
    W = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ W + b, y) + l2 * (W**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return W.detach(), b.detach()


def probe_layers(
    acts: torch.Tensor,
    labels: Sequence,
    *,
    layers: Sequence[int] | None = None,
    test_mask: Sequence[bool] | None = None,
    test_frac: float = 0.3,
    seed: int = 0,
    l2: float = 1e-2,
) -> ProbeResult:
    """Fit one probe per layer. ``acts``: ``[n_items, n_layers, d_model]``; ``labels``: ``[n_items]`` (any hashable).

    The test split is ``test_mask`` if given, else a seeded stratified-free random ``test_frac`` of items.
    Features are standardised with training statistics.
    """
    n = acts.shape[0]
    if n != len(labels):
        raise InputError(f"{n} activation rows but {len(labels)} labels")
    classes = sorted(set(labels), key=str)
    if len(classes) < 2:
        raise InputError("a probe needs at least two classes")
    y = torch.tensor([classes.index(l) for l in labels])
    if test_mask is None:
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=g)
        test = torch.zeros(n, dtype=torch.bool)
        test[perm[: max(1, int(round(test_frac * n)))]] = True
    else:
        test = torch.as_tensor(list(test_mask), dtype=torch.bool)
    if test.all() or not test.any():
        raise InputError("the train/test split leaves one side empty")
    layers = list(range(acts.shape[1])) if layers is None else list(layers)
    majority = torch.bincount(y[~test], minlength=len(classes)).argmax()
    chance = (y[test] == majority).double().mean().item()
    train_acc, test_acc = [], []
    for j in range(len(layers)):
        x = acts[:, j].double()
        mu, sd = x[~test].mean(0), x[~test].std(0).clamp_min(1e-6)
        x = (x - mu) / sd
        W, b = fit_logistic(x[~test], y[~test], len(classes), l2=l2)
        pred = (x @ W + b).argmax(-1)
        train_acc.append((pred[~test] == y[~test]).double().mean().item())
        test_acc.append((pred[test] == y[test]).double().mean().item())
    return ProbeResult(layers, train_acc, test_acc, chance, classes, int((~test).sum()), int(test.sum()))
