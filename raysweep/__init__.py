"""raysweep: self-supervised pre-training, multi-seed evaluation and significance reports for
medical imaging with limited labels (Haggerty & Chandra), at cluster scale on Ray."""

__version__ = "0.1.0"
