"""The language-model side of the agent: loading the base model, assembling the VLM."""
