"""Trial scoring: embeddings -> cosine (segment-pair mean) scores -> optional AS-norm -> score file."""
from svmix.scoring.embeddings import Embeddings, load_embeddings, load_mean
from svmix.scoring.norms import SCORE_NORMS
from svmix.scoring.pipeline import score_file, score_trials
from svmix.scoring.scorefile import read_scores, write_scores
from svmix.scoring.trials import TrialIndex, read_trial_index

__all__ = ["Embeddings", "SCORE_NORMS", "TrialIndex", "load_embeddings", "load_mean", "read_scores",
           "read_trial_index", "score_file", "score_trials", "write_scores"]
