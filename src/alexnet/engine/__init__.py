"""Training and evaluation: config, loops, checkpoints, distributed plumbing."""
