"""svmix: distil a self-supervised speech teacher into an SV-Mixer speaker-verification student."""

__version__ = "0.1.0"


def load_model(path, **kwargs):
    """Load a trained model for ``.embed(audio)`` and ``.score(a, b)``; see :mod:`svmix.api`."""
    from svmix.api import load_model as _load_model

    return _load_model(path, **kwargs)
