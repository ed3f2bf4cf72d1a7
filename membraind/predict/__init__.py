"""Prediction: tiled, streaming inference of model bundles over volumes of any size."""
