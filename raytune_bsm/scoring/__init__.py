"""Prediction, one package: the scorer (`predict.py`: `Predictor`, `predict_file`), its batches, ONNX Runtime sessions
and streamed files. `bsm predict`, cluster predict (runner/batch_predict.py) and serving (runner/serve_app.py) all
score through it. No torch."""
