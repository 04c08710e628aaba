"""Experiments: the replay of a year under retraining policies, and its results."""
