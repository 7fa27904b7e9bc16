"""Training curves from metrics.jsonl as a PNG."""

from __future__ import annotations

import os

from jirl.train.metrics_writer import read_metrics

PANELS = (
    ("loss", "eval_loss"),
    ("nll", "eval_nll"),
    ("td_reg", "eval_td_reg"),
    ("accuracy", "eval_accuracy"),
    ("eval_answer_accuracy",),
    ("disc_expert_accuracy", "disc_policy_accuracy"),  # GAIL
    ("reward_mean", "reward_std"),
    ("kl",),
)


def plot_training_curves(workdir: str) -> str:
    """Plots loss, NLL, TD regulariser, token and answer accuracy (train/eval) and, for GAIL, the
    discriminator's accuracy, the reward and the KL, by step: the panels whose metrics the run logged.
    Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(workdir)
    panels = [keys for keys in PANELS if any(key in r for r in records for key in keys)] or PANELS[:1]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, keys in zip(axes[0], panels):
        for key in keys:
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                ax.plot(*zip(*points), marker="." if key.startswith("eval_") else None, label=key)
        if keys[0].endswith("accuracy"):
            ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("step")
        ax.set_title(keys[0])
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = os.path.join(workdir, "curves.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
