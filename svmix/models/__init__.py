"""Students: conv frontend → frame encoder (registry ``ENCODERS``) → backend (registry ``BACKENDS``).

Importing this package registers every built-in encoder and backend.
"""
from svmix.models import backends, convmixer, cyclemlp, ecapa, redimnet, svmixer, transformer  # noqa: F401  (registration side effects)
from svmix.models.init_from_teacher import init_frontend_from_teacher  # noqa: F401
from svmix.models.speaker_model import SpeakerModel, build_model, resolve_model_config  # noqa: F401
