"""speakerverify: speaker verification with x-vector style encoders trained by triplet loss."""

__version__ = "0.1.0"
