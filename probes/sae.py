"""SAE readout: decompose a direction into sparse-autoencoder latents (the "persona features" view of EM).

SAEs are sae-lens SAEs: loaded from a local directory (``SAE.load_from_disk``) or, where a hub is reachable,
from the sae-lens registry as ``release:sae_id``. :func:`train_sae` builds a small sae-lens ``StandardSAE`` and
fits it on activations (for offline tests and small models).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from interp.io import InputError


def load_sae(spec: str | Path, *, device: str = "cpu"):
    """A sae-lens SAE from a local directory, or ``release:sae_id`` from the sae-lens registry (needs a hub)."""
    from sae_lens import SAE

    path = Path(spec)
    if path.is_dir():
        if not (path / "cfg.json").is_file():
            raise InputError(f"{path} is not a sae-lens SAE directory (no cfg.json)")
        return SAE.load_from_disk(path, device=device)
    if ":" in str(spec):
        release, sae_id = str(spec).split(":", 1)
        return SAE.from_pretrained(release, sae_id, device=device)
    raise InputError(f"SAE {spec!r}: not a directory and not release:sae_id")


def train_sae(acts: torch.Tensor, d_sae: int, *, steps: int = 300, l1: float = 1e-3, lr: float = 3e-3, seed: int = 0):
    """Fit a sae-lens ``StandardSAE`` on ``acts`` ``[n, d]``: MSE + l1 · Σ_i f_i ‖W_dec,i‖ (full batch, Adam)."""
    from sae_lens import StandardSAE, StandardSAEConfig

    x = acts.float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sae = StandardSAE(StandardSAEConfig(d_in=x.shape[1], d_sae=d_sae))
        with torch.no_grad():
            for p in sae.parameters():
                if p.dim() == 2:
                    torch.nn.init.kaiming_uniform_(p)
            sae.b_dec.copy_(x.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            f = sae.encode(x)
            loss = ((sae.decode(f) - x) ** 2).sum(-1).mean() + l1 * (f * sae.W_dec.norm(dim=-1)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    sae.eval()
    return sae


@dataclass
class Decomposition:
    """Top latents of a direction. ``by_decoder``: (latent, cosine of W_dec row with the direction);
    ``by_activation``: (latent, mean activation on positive examples − on negative examples, if given)."""

    by_decoder: list[tuple[int, float]]
    by_activation: list[tuple[int, float]]

    def to_dict(self) -> dict:
        return asdict(self)


def decompose(direction: torch.Tensor, sae, *, positive: torch.Tensor | None = None, negative: torch.Tensor | None = None,
              top_k: int = 10) -> Decomposition:
    """Decompose ``direction`` ``[d]`` into SAE latents.

    ``positive`` / ``negative``: activations ``[n, d]`` of the direction's positive / negative examples at the
    SAE's layer (e.g. from ``interp.collect_activations``).
    """
    W = sae.W_dec.detach().float()  # [d_sae, d]
    if direction.dim() != 1 or direction.shape[0] != W.shape[1]:
        raise InputError(f"direction has shape {tuple(direction.shape)} but the SAE reads d_in={W.shape[1]}")
    if not torch.isfinite(direction).all() or direction.norm() == 0:
        raise InputError("direction is zero or not finite")
    cos = torch.nn.functional.cosine_similarity(W, direction.float()[None], dim=-1)
    k = min(top_k, W.shape[0])
    top = cos.topk(k)
    by_act: list[tuple[int, float]] = []
    if positive is not None:
        with torch.no_grad():
            score = sae.encode(positive.float()).mean(0)
            if negative is not None:
                score = score - sae.encode(negative.float()).mean(0)
        t = score.topk(k)
        by_act = [(int(i), float(v)) for v, i in zip(t.values, t.indices)]
    return Decomposition([(int(i), float(v)) for v, i in zip(top.values, top.indices)], by_act)
