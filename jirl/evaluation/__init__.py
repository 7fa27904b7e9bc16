"""Measures of a model's outputs: task quality, diversity, answer accuracy, and extracted rewards.

Pure functions of samples, references and parameters; nothing here trains, loads a run or parses
flags (that is `jirl.train` and the commands above it).
"""
