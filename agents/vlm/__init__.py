"""The vision-language agent: the local model store, the LLaVA-style model, versioned
prompts, the strict-but-total parser, log-probabilities by text offsets, LoRA adapters
and their loading."""
