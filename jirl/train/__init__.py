"""Training: state, optimizer, the jitted step, the loop and metric writers."""

from jirl.train.loop import head_options, loss_function, model_config, train
from jirl.train.optimizer import make_optimizer
from jirl.train.state import TrainState, create_train_state
from jirl.train.step import check_batch, make_eval_step, make_train_step

__all__ = [
    "TrainState",
    "check_batch",
    "create_train_state",
    "head_options",
    "loss_function",
    "make_eval_step",
    "make_optimizer",
    "make_train_step",
    "model_config",
    "train",
]
