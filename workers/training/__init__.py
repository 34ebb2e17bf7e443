"""Training a LoRA classifier judge: config, data, splits, the training loop, the stack."""
