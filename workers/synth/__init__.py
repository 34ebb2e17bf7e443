"""Synthetic labels from a teacher model (the synth job's pipeline)."""
