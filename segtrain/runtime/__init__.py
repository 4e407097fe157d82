"""What runs a job, whatever the task: trainer and threads, DDP ranks, sweeps, checkpoints, loggers and
callbacks."""
