"""Paper-style plotting functions: one function per figure, each writing PNG and PDF atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from interp.io import atomic_path  # noqa: E402


def save_figure(fig, path: str | Path) -> list[Path]:
    """Save ``fig`` as ``path`` (.png) and the same stem as .pdf; returns both paths."""
    path = Path(path).with_suffix(".png")
    out = []
    for p in (path, path.with_suffix(".pdf")):
        with atomic_path(p) as tmp:
            fig.savefig(tmp, dpi=150, bbox_inches="tight", format=p.suffix[1:])
        out.append(p)
    plt.close(fig)
    return out


def concept_heatmaps(
    cosine: torch.Tensor, names: Sequence[str], layers: Sequence[int], path: str | Path, *, panels: Sequence[int] | None = None, title: str = ""
) -> list[Path]:
    """Cosine-similarity heatmaps of concept vectors, one panel per selected layer.

    Args:
        cosine: ``[n_layers, n_concepts, n_concepts]``.
        layers: model layer index of each row of ``cosine``.
        panels: model layers to show (default: four spread over depth).
    """
    if panels is None:
        k = min(4, len(layers))
        panels = [layers[round(i * (len(layers) - 1) / max(k - 1, 1))] for i in range(k)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1, 3.8), squeeze=False)
    im = None
    for ax, layer in zip(axes[0], panels):
        m = cosine[layers.index(layer)].float().numpy()
        im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(f"layer {layer}")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names if ax is axes[0][0] else [""] * len(names), fontsize=7)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=5)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="cosine")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def similarity_sweep(similarity: torch.Tensor, names: Sequence[str], layers: Sequence[int], target: str, path: str | Path) -> list[Path]:
    """Line plot over layers of each concept's cosine similarity to ``target`` (``similarity``: ``[n_layers, n_concepts]``)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for c, name in enumerate(names):
        if name == target:
            continue
        ax.plot(layers, similarity[:, c].float().numpy(), marker=".", label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel(f"cos(v_c, v_{target})")
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"concept similarity to {target}")
    return save_figure(fig, path)


def direction_norms(norms: torch.Tensor, layers: Sequence[int], path: str | Path, *, label: str = "‖r_l‖") -> list[Path]:
    """Norm of a mean-diff direction per layer (``norms``: ``[n_layers]``)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(layers, norms.float().numpy(), marker=".")
    ax.set_xlabel("layer")
    ax.set_ylabel(label)
    ax.set_title("mean-difference direction norm")
    return save_figure(fig, path)
