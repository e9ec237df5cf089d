"""The drift monitor sidecar (`mlplane-monitor`): served rows versus the training profile."""
