"""The front-end: reading and resampling audio, voice detection, log-mel features, and
the augmentation and channel simulation of training crops (numpy twins for the torch-free path).

Docstring only: import the modules themselves, so that importing this package imports no torch.
"""
