"""The front-end, what inference needs: reading and resampling audio, voice detection and log-mel
features (numpy twins for the torch-free path). The augmentation and channel simulation of
training crops belong to the data pipeline (`speakerverify.data.augment`, `.simulate`).

Docstring only: import the modules themselves, so that importing this package imports no torch.
"""
