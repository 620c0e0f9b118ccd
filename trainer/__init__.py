"""StreamSSL trainer: continual self-supervised learning (future prediction, temporal order) from the bus."""
