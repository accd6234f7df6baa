"""Worked examples of the pipeline on real data (the models, data and training loops of the demo)."""
