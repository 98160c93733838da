"""SSL teachers (WavLM, HuBERT, wav2vec 2.0): loading, layer indexing, the mini teacher.

:class:`Teacher` declares what svmix uses of a teacher; every source yields an :class:`SSLTeacher`."""
from svmix.teachers.model import SSLTeacher
from svmix.teachers.protocol import Teacher, check_teacher
from svmix.teachers.sources import TORCHAUDIO_BUNDLES, load_teacher, save_teacher, teacher_fingerprint

__all__ = ["SSLTeacher", "TORCHAUDIO_BUNDLES", "Teacher", "check_teacher", "load_teacher", "save_teacher",
           "teacher_fingerprint"]
