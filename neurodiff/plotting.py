"""Figures: reconstruction panels, uncertainty and anomaly overlays (nilearn), error against uncertainty, loss
curves and sample grids. Functions return matplotlib figures; nothing is shown or saved unless the caller does it."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def recon_panels(zerofilled: np.ndarray, recon: np.ndarray, uncertainty: np.ndarray,
                 reference: np.ndarray | None = None, title: str = "", axes=None) -> Figure:
    """One slice side by side: zero-filled, reconstruction, uncertainty (and reference and |error| if given).
    Arrays are 2D ``(H, W)`` in voxel order; shown with the first axis vertical. ``axes``: draw into these (3, or 5
    with a reference) instead of a new figure."""
    panels = [("zero-filled", np.abs(zerofilled), "gray"), ("reconstruction (posterior mean)", np.abs(recon), "gray"),
              ("uncertainty (posterior std)", uncertainty, "magma")]
    if reference is not None:
        panels = [("reference", reference, "gray")] + panels + [("|error|", np.abs(np.abs(recon) - reference), "magma")]
    vmax = np.percentile(np.abs(recon), 99.5)
    if axes is None:
        fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4))
    fig = axes[0].figure
    for ax, (name, img, cmap) in zip(axes, panels):
        limit = vmax if cmap == "gray" else np.percentile(panels[-1][1] if reference is not None else uncertainty, 99.5)
        ax.imshow(np.rot90(img), cmap=cmap, vmin=0, vmax=limit)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def uncertainty_overlay(recon_img, uncertainty_img, title: str = "posterior std over the reconstruction",
                        percentile: float = 60.0):
    """nilearn overlay of an uncertainty map on the reconstruction (both Niimg-like): voxels below the
    ``percentile`` of the non-zero uncertainty are left transparent so the anatomy shows. Returns the display."""
    from nilearn import image, plotting

    data = image.get_data(uncertainty_img)
    threshold = float(np.percentile(data[data > 0], percentile)) if np.any(data > 0) else None
    return plotting.plot_stat_map(uncertainty_img, bg_img=recon_img, display_mode="z", cut_coords=5,
                                  cmap="inferno", threshold=threshold, colorbar=True, title=title, black_bg=True)


def anomaly_overlay(scan_img, score_img, threshold: float, title: str = "anomaly score (healthy SDs)",
                    cut_coords=None, mask_img=None):
    """nilearn overlay of an anomaly score map on its scan (both Niimg-like): scores below ``threshold`` (e.g. the
    calibrated one) are transparent; ``mask_img`` (e.g. a reference lesion mask) is drawn as a green contour.
    ``cut_coords``: axial positions in mm, or a number of cuts (default 5 through the highest-scoring region).
    Returns the display."""
    from nilearn import image, plotting

    if cut_coords is None:
        data = image.get_data(score_img)
        k = np.unravel_index(np.argmax(data), data.shape)
        z = float((image.load_img(score_img).affine @ np.r_[k, 1])[2])
        cut_coords = [z - 12, z - 6, z, z + 6, z + 12]
    display = plotting.plot_stat_map(score_img, bg_img=scan_img, display_mode="z", cut_coords=cut_coords,
                                     cmap="hot", threshold=threshold, colorbar=True, title=title, black_bg=True)
    if mask_img is not None:
        display.add_contours(mask_img, levels=[0.5], colors="lime", linewidths=0.8)
    return display


def error_vs_uncertainty(reference: np.ndarray, mean: np.ndarray, std: np.ndarray, bins: int = 20,
                         ax=None) -> Figure:
    """Binned mean absolute error against predicted std (a calibrated map follows |err| ~ 0.8 std, the mean
    absolute value of a Gaussian), with the Gaussian reference line; ``ax``: draw into it instead of a new figure."""
    err, s = np.abs(mean - reference).ravel(), std.ravel()
    edges = np.quantile(s, np.linspace(0, 1, bins + 1))
    idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, bins - 1)
    df = pd.DataFrame({"bin": idx, "std": s, "err": err}).groupby("bin").mean()
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    fig = ax.figure
    ax.plot(df["std"], df["err"], "o-", label="observed")
    lim = float(max(df["std"].max(), df["err"].max()))
    ax.plot([0, lim], [0, lim * np.sqrt(2 / np.pi)], "k--", lw=1, label="calibrated Gaussian")
    ax.set_xlabel("predicted std (per voxel, binned)")
    ax.set_ylabel("mean |error|")
    ax.legend()
    fig.tight_layout()
    return fig


def recon_summary(zerofilled: np.ndarray, recon: np.ndarray, uncertainty: np.ndarray, k: int,
                  reference: np.ndarray | None = None, title: str = "") -> Figure:
    """The figure ``neurodiff recon`` writes: slice ``k`` of ``(S, H, W)`` stacks as :func:`recon_panels`, and with a
    fully sampled ``reference`` the calibration curve (:func:`error_vs_uncertainty`) over the object's voxels of
    all slices."""
    n = 3 if reference is None else 6
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.4))
    recon_panels(zerofilled[k], recon[k], uncertainty[k], None if reference is None else reference[k], title,
                 axes=axes)
    if reference is not None:
        from .mri.metrics import foreground

        fg = foreground(reference)
        error_vs_uncertainty(reference[fg], np.abs(recon)[fg], uncertainty[fg], ax=axes[5])
        axes[5].set_title("calibration (object voxels)", fontsize=9)
    return fig


def loss_curve(losses: pd.DataFrame, title: str = "training loss") -> Figure:
    """Loss per step (light) and its moving average (dark); ``losses`` has columns step, loss, loss_smooth."""
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(losses["step"], losses["loss"], alpha=0.25, lw=0.5)
    ax.plot(losses["step"], losses["loss_smooth"], lw=1.5)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def sample_grid(images: np.ndarray, ncols: int = 8, title: str = "") -> Figure:
    """Grid of 2D images ``(N, H, W)`` (e.g. unconditional samples)."""
    n = len(images)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.5 * ncols, 1.5 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img in zip(axes.ravel(), images):
        ax.imshow(np.rot90(img), cmap="gray")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
