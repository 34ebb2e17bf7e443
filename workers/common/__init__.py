"""Helpers every worker layer uses (jobs, stacking, judge, training, synth); they import no other workers module."""
