"""The experiment's figures (matplotlib, Agg backend): reward maps, ROC curve, intent accuracy."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jirl.irl.mdp import Layout  # noqa: E402


def _map(ax, layout: Layout, values_S: np.ndarray, title: str):
    if layout.grid_shape is not None:
        image = ax.imshow(values_S.reshape(layout.grid_shape), cmap="viridis")
    else:
        image = ax.scatter(layout.coords_S2[:, 1], layout.coords_S2[:, 0], c=values_S, s=8, cmap="viridis")
        ax.invert_yaxis()
        ax.set_aspect("equal")
    for name, state in layout.landmarks.items():
        y, x = layout.coords_S2[state]
        ax.plot(x, y, marker="*" if name == "goal" else "o", color="red", markersize=9)
        ax.annotate(name, (x, y), color="white", fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    plt.colorbar(image, ax=ax, fraction=0.046, pad=0.04)


def reward_maps(path: str, layout: Layout, maps: dict, suptitle: str) -> None:
    """One panel per (title -> reward_S) with NaN at terminal states."""
    fig, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 3.8))
    for ax, (title, values) in zip(np.atleast_1d(axes), maps.items()):
        _map(ax, layout, np.asarray(values, np.float64), title)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def roc(path: str, curves: dict) -> None:
    """curves: label -> (fpr, tpr, auc)."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})", drawstyle="steps-post")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate (normal flagged)")
    ax.set_ylabel("true positive rate (abnormal flagged)")
    ax.set_title("anomaly score: per-step NLL under the learned reward", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def intent(path: str, fractions, accuracy, chance: float) -> None:
    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    ax.plot(fractions, accuracy, marker="o", label="posterior argmax")
    ax.axhline(chance, color="grey", linestyle=":", label=f"chance ({chance:.2f})")
    ax.set_xlabel("fraction of the trajectory observed")
    ax.set_ylabel("goal accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("intent: most probable goal from a prefix", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
