"""The judge: prompts, engines, votes, the trained classifier, loading a model and adapter."""
