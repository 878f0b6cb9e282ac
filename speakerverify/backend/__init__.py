"""The back-end: models for inference (torch or the ONNX twin), embedding extraction into
embedding dirs, scoring and normalisation, calibration, metrics, plots and ONNX export.

Docstring only: import the modules themselves, so that the torch-free paths stay torch-free.
"""
