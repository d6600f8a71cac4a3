"""Training, evaluation and checkpointing of mmcore models from a config."""
