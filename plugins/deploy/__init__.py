"""Deploying a trained model: ``mmcore export`` (ONNX / torch.export, optional int8, a numpy front end)
and ``mmcore serve`` (FastAPI + uvicorn: a JSON API and a web page built from the model's slots)."""
