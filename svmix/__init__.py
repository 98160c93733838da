"""svmix: distil a self-supervised speech teacher into an SV-Mixer speaker-verification student."""

__version__ = "0.1.0"
