"""Activity model of the paper (§4; paper-spec §6): space-time blocks of the full grey frames, encoded by a
synchrony autoencoder, quantised into a bag of words, classified by a chi-squared-kernel SVM.

``blocks``: random and dense 16x16x10 block extraction; ``encode``: the SAE encoder with the block whitening folded
in; ``bow``: the codebook and the motion-weighted histograms. The SAE itself is trained in ``lightning_modules.sae``.
"""

from emotiw.activity.blocks import (
    BLOCK_SHAPE,
    block_whitener,
    dense_block_origins,
    dense_blocks,
    double_short_clip,
    sample_blocks,
)
from emotiw.activity.bow import BagOfWords, load_codebook, motion_weights, save_codebook
from emotiw.activity.encode import FoldedEncoder
from emotiw.activity.features import EncodingReport, encode_clip, encode_clips, iter_encoded_clips, read_gray
from emotiw.activity.threads import cpu_threads

__all__ = [
    "BLOCK_SHAPE",
    "BagOfWords",
    "EncodingReport",
    "FoldedEncoder",
    "block_whitener",
    "cpu_threads",
    "dense_block_origins",
    "dense_blocks",
    "encode_clip",
    "encode_clips",
    "iter_encoded_clips",
    "load_codebook",
    "double_short_clip",
    "motion_weights",
    "read_gray",
    "sample_blocks",
    "save_codebook",
]
