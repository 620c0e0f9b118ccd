"""The model: frame encoder → embeddings; temporal context → future embeddings; order and pixel heads."""

from trainer.model.heads import PERMUTATIONS
from trainer.model.streamssl_model import ModelOutputs, StreamSSLModel

__all__ = ["PERMUTATIONS", "ModelOutputs", "StreamSSLModel"]
