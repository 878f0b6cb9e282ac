"""Training: the experiment config file, the loop, its setup from a config, exact resume,
schedules, per-epoch validation, the experiment directory, distributed helpers and fine-tuning.

Docstring only: import the modules themselves.
"""
