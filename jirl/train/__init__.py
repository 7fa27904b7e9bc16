"""Training: state, the jitted step, online sampling, checkpoints, the loop and its writers."""

from jirl.train.batch_check import check_batch
from jirl.train.loop import train
from jirl.train.state import TrainState, create_sharded_train_state, create_train_state
from jirl.train.step import TrainStep, make_eval_step, make_train_step

__all__ = [
    "TrainState",
    "TrainStep",
    "check_batch",
    "create_sharded_train_state",
    "create_train_state",
    "make_eval_step",
    "make_train_step",
    "train",
]
