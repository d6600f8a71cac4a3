"""``mmcore prune``: structured pruning of a trained run, then fine-tuning (placeholder: filled below)."""
