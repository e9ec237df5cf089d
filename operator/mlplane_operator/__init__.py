"""mlplane operator: reconciles TrainingJob, ModelVersion and InferenceService."""

__version__ = "0.1.0"
