"""emotiw: framework-free algorithms for video emotion recognition (Kahou et al., ICMI 2015).

Nothing in this package imports Lightning: I/O for every data format, face alignment, audio and activity
features, k-average pooling, the SVM and random-search estimators, the synthetic data generator and the report
live here, so they are usable and testable on their own. The Lightning layer (``lightning_modules``,
``datamodules``, ``callbacks``, ``stages``) calls into it.
"""

__version__ = "0.1.0"
