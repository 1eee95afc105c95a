"""Pictures of samples: an image grid, or for 1-D points a histogram against the real points."""

from __future__ import annotations

from pathlib import Path

import torch


def save_samples(x: torch.Tensor, path: str | Path, real: torch.Tensor | None = None) -> None:
    """Write samples as a PNG: a grid for (N, C, H, W) images in [-1, 1]; for (N, 1) points a
    histogram, with the real points (when given) marked as vertical lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if x.dim() == 4:
        from torchvision.utils import save_image

        nrow = max(1, int(round(x.shape[0] ** 0.5)))
        save_image((x.clamp(-1, 1) + 1) / 2, str(path), nrow=nrow, padding=1)
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(x.flatten().numpy(), bins=60, color="tab:blue", alpha=0.8, label="generated")
    if real is not None:
        for i, r in enumerate(real.flatten().tolist()):
            ax.axvline(r, color="tab:red", lw=2, label="real" if i == 0 else None)
    ax.set_xlabel("x")
    ax.set_ylabel("count")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
