"""Per-camera processing between the decoder and the bus: sample by PTS, preprocess, cut windows, fit the size."""
