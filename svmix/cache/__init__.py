"""Teacher feature cache (stage 2): building, verifying and reading."""
from svmix.cache.reader import TeacherCache
from svmix.cache.writer import CacheSettings, build_cache, utterance_frames, verify_cache

__all__ = ["TeacherCache", "CacheSettings", "build_cache", "utterance_frames", "verify_cache"]
