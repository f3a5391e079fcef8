"""Scoring pieces behind `raytune_bsm.predict`: batches, ONNX Runtime sessions, streamed files. No torch."""
