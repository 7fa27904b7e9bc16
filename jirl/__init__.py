"""jirl: JAX-native imitation learning for sequence models (MLE and IQLearn)."""

__version__ = "0.1.0"
