"""A tiny, fast experiment config for loop tests, derived from the real arith experiment."""

import os

from jirl.experiment import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARITH = os.path.join(ROOT, "experiments", "arith.py")


def load_arith(objective="iqlearn"):
    return load_config(ARITH, objective)


def tiny_config(data_dir, objective="iqlearn", steps=8):
    config = load_arith(objective)
    config.task.config = "tiny"
    config.task.data_dir = data_dir
    config.task.seq_len = 128
    config.model.preset = "tiny"
    config.train.update(steps=steps, batch_size=4, log_every=2, warmup_steps=2, learning_rate=1e-2)
    config.eval.update(every=4, loss_batches=2, num_examples=4, max_new_tokens=8)
    return config
