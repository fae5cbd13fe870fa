"""Training: the phased trainer, its schedules, per-epoch validation and the run directory."""
