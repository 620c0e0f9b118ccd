"""The data path: bus → window source (consumer thread) → batch planner (training thread: fresh, replay, held out,
dead letters) → decode pool (decode + clip-consistent augmentation on worker threads) → batches."""
