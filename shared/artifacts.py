"""File names of the artefacts on the shared volume, written once here (layout: shared/storage.py)."""

from __future__ import annotations

# Folders under SHARED_DIR that both sides name: models (base models, the text encoder, predictors) and adapters
MODELS_DIR_NAME = "models"
ADAPTERS_DIR_NAME = "adapters"
# Caches a worker may rebuild at any time (embeddings of texts already seen): never a job's only copy of anything
CACHE_DIR_NAME = "cache"

# The other folders under SHARED_DIR (what each holds: shared/storage.py)
DATASETS_DIR_NAME = "datasets"
JOBS_DIR_NAME = "jobs"
SUBMISSIONS_DIR_NAME = "submissions"
SYNTH_DIR_NAME = "synth"

# A Hugging Face model folder's config: the file that makes a folder a model (models/<name>/, a merged classifier)
MODEL_CONFIG_NAME = "config.json"

# submissions/<job_id>/: what a predict job publishes (train and synth jobs reuse METRICS_NAME)
SUBMISSION_NAME = "submission.csv"
METRICS_NAME = "metrics.json"
VOTES_NAME = "votes.npz"
RELIABILITY_NAME = "reliability.png"  # labelled datasets: predicted vs observed frequency per class
# Datasets with model names: leaderboard.csv/.json/.png, leaderboard_winrates.csv, human_* with labels too
LEADERBOARD_NAME = "leaderboard.csv"

# datasets/<id>/
DATASET_CSV_NAME = "dataset.csv"
DATASET_META_NAME = "meta.json"

# adapters/<name>/: a trained judge (PEFT files + ours)
ADAPTER_CONFIG_NAME = "adapter_config.json"
CALIBRATION_NAME = "calibration.json"
JUDGE_SETTINGS_NAME = "judge_settings.json"
TEXT_MODEL_NAME = "text_model.json"
DOMAIN_REFERENCE_NAME = "domain_reference.npz"  # text predictors: training prompts for the domain check
TRAIN_JOB_OWNER_NAME = "train_job.json"
CURVE_NAME = "learning_curve.png"
VALIDATION_LOGITS_NAME = "validation_logits.npz"
MERGED_DIR_NAME = "merged-for-vllm"
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
TRAINER_STATE_NAME = "trainer_state.json"

# synth/<job_id>/
SYNTH_PAIRS_NAME = "pairs.csv"
SYNTH_ANNOTATIONS_NAME = "annotations.jsonl"
SYNTH_CONFIG_NAME = "synth_config.json"
SYNTH_CHUNKS_DIR = "chunks"
