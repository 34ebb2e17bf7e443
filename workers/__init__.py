"""Celery workers: tasks (thin views) over job steps in jobs/, the judge, stacking, training, synth; the CLI."""
