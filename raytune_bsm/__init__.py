"""raytune_bsm: train, sweep and export a chunked-BERT dialogue classifier on Ray."""

__version__ = "0.1.0"
