"""Config-driven training: trainer, losses, augmentation, checkpoints, DDP, OOF, label flags."""
