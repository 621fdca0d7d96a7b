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


def layer_sweep(table: Sequence[dict], baseline: dict, path: str | Path, *, kl_threshold: float = 0.1, title: str = "") -> list[Path]:
    """Per layer (last template offset): refusal score under ablation (harmful) and under addition (harmless),
    and KL on harmless under ablation. ``table``: rows of the selection table (dicts)."""
    rows = sorted((r for r in table if r["pos"] == max(t["pos"] for t in table)), key=lambda r: r["layer"])
    layers = [r["layer"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(layers, [r["ablation_score"] for r in rows], marker=".", label="harmful, direction ablated")
    ax1.plot(layers, [r["steering_score"] for r in rows], marker=".", label="harmless, direction added")
    ax1.axhline(baseline["harmful_score"], ls="--", color="C0", lw=0.8, label="harmful baseline")
    ax1.axhline(baseline["harmless_score"], ls="--", color="C1", lw=0.8, label="harmless baseline")
    ax1.set_xlabel("layer")
    ax1.set_ylabel("refusal score (log-odds)")
    ax1.legend(fontsize=7)
    ax2.plot(layers, [r["kl"] for r in rows], marker=".", color="C2")
    ax2.axhline(kl_threshold, ls="--", color="grey", lw=0.8)
    ax2.set_yscale("log")
    ax2.set_xlabel("layer")
    ax2.set_ylabel("KL(base ‖ ablated), harmless")
    for r in rows:
        if r.get("passed"):
            ax1.axvline(r["layer"], color="green", alpha=0.08)
    fig.suptitle(title or "refusal-direction layer sweep")
    return save_figure(fig, path)


def grouped_bars(values: dict[str, dict[str, float]], path: str | Path, *, ylabel: str, title: str = "",
                 errors: dict[str, dict[str, float]] | None = None) -> list[Path]:
    """Grouped bar chart: ``values[condition][group]`` (e.g. refusal rate per domain per condition)."""
    import numpy as np

    conds = list(values)
    groups = list(next(iter(values.values())))
    x = np.arange(len(groups))
    w = 0.8 / len(conds)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(groups) + 2), 3.8))
    for i, c in enumerate(conds):
        err = [errors[c][g] for g in groups] if errors else None
        ax.bar(x + (i - (len(conds) - 1) / 2) * w, [values[c][g] for g in groups], w, yerr=err, label=c, capsize=2)
    ax.set_xticks(x, groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.set_title(title)
    return save_figure(fig, path)


def probe_accuracy(result: dict, path: str | Path, *, title: str = "") -> list[Path]:
    """Held-out (and train) accuracy of per-layer linear probes, with the majority-class baseline."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(result["layers"], result["test_accuracy"], marker=".", label=f"held-out (n={result['n_test']})")
    ax.plot(result["layers"], result["train_accuracy"], ls=":", label=f"train (n={result['n_train']})")
    ax.axhline(result["chance"], color="grey", ls="--", lw=0.8, label="majority class")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("layer")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    ax.set_title(title or "linear probe accuracy per layer")
    return save_figure(fig, path)


def solution_curves(result: dict, out_dir: str | Path) -> list[Path]:
    """The three narrow-vs-general figures: loss vs norm, R(ε) with ±sd bands, generic-text KL vs norm."""
    out_dir = Path(out_dir)
    paths = []
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, c in result["efficiency_curve"].items():
        ax.plot(c["norms"], c["loss"], marker=".", label=f"{name} (‖θ‖={c['norm']:.2g})")
    ax.set_xlabel("‖θ‖ (rescaled)")
    ax.set_ylabel("loss on narrow data")
    ax.legend(fontsize=7)
    ax.set_title("efficiency: loss at equal norm")
    paths += save_figure(fig, out_dir / "loss_vs_norm")
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, st in result["stability"].items():
        import numpy as np

        m, sd = np.array(st["mean"]), np.array(st["sd"])
        ax.plot(st["eps"], m, marker=".", label=name)
        ax.fill_between(st["eps"], m - sd, m + sd, alpha=0.2)
    ax.set_xlabel("ε")
    ax.set_ylabel("R(ε) %")
    ax.legend(fontsize=7)
    ax.set_title("stability under directional perturbation")
    paths += save_figure(fig, out_dir / "stability")
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, c in result["generic_kl"].items():
        ax.plot(c["norms"], c["kl"], marker=".", label=name, ls="--" if name.endswith("_random") else "-")
    ax.set_xlabel("‖θ‖ (rescaled)")
    ax.set_ylabel("KL(base ‖ steered) per token")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.legend(fontsize=7)
    ax.set_title("influence on generic text")
    paths += save_figure(fig, out_dir / "generic_kl")
    return paths
