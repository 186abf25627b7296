"""Face finding, alignment to the FER 48x48 frame, and the per-clip face cache."""
