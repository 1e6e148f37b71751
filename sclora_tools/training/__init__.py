"""What `sclora train` runs around the transformers Trainer: the processes of a run (one, or
several under torchrun / accelerate launch), the progress and drift it reports while training,
and the third-party output it keeps quiet."""
