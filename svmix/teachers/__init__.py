"""SSL teachers (WavLM, HuBERT, wav2vec 2.0): loading, layer indexing, the mini teacher."""
from svmix.teachers.model import SSLTeacher
from svmix.teachers.sources import TORCHAUDIO_BUNDLES, load_teacher, save_teacher, teacher_fingerprint

__all__ = ["SSLTeacher", "TORCHAUDIO_BUNDLES", "load_teacher", "save_teacher", "teacher_fingerprint"]
