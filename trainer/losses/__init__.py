"""One loss per file: InfoNCE future prediction, temporal order, next-frame pixels; :mod:`trainer.losses.total`
combines them with the configured weights."""
