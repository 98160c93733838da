"""Stage 3, distillation training: losses, data, optimisation, checkpoints and the trainer."""
