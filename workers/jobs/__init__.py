"""Job steps the Celery tasks run (predict, score, train, synth); no Celery in here."""
