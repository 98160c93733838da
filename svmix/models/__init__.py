"""Speaker models: frontend (registry ``FRONTENDS``) → frame encoder (``ENCODERS``) → backend
(``BACKENDS``); the students use the conv frontend.

Importing this package registers every built-in frontend, encoder and backend.
"""
from svmix.models import (backends, convmixer, cyclemlp, ecapa, encoder, fbank, frontend, redimnet,  # noqa: F401
                          svmixer, svmixer_anylen, teacher_frontend, transformer)  # (registration side effects)
from svmix.models.init_from_teacher import init_frontend_from_teacher  # noqa: F401
from svmix.models.speaker_model import SpeakerModel, build_model, resolve_model_config  # noqa: F401
