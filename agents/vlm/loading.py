"""Building a VLM agent from a saved adapter, exactly as it was trained.

The adapter's manifest names the base model (its hash is checked), the vision tower's
config and the prompt version, so evaluation, the demo and the trainers (starting
policies, frozen references) all rebuild the same agent through this one function.
"""

from __future__ import annotations

from pathlib import Path

from agents.vlm.lora import load_adapter, read_manifest
from agents.vlm.model import GenerationConfig, VisionConfig, VLMAgent, build_vlm
from agents.vlm.model_store import DEFAULT_MODEL
from agents.vlm.speculative import read_drafts


def agent_from_adapter(adapter_dir: Path | str, task: str, generation: GenerationConfig | None = None,
                       trainable: bool = False, merge: bool = False, seed: int = 0) -> VLMAgent:
    """The adapter on its base model, with its own vision config and prompt version.

    merge=True folds the LoRA weights into the base (inference only): decoding skips the
    adapter's extra matmuls, which is most of a decision's time on a CPU; the merged weights take
    the dtype of `generation.precision` (bfloat16 where the device computes it natively).
    """
    generation = generation or GenerationConfig()
    adapter_dir = Path(adapter_dir)
    manifest = read_manifest(adapter_dir)
    vision = VisionConfig(**manifest.get("vision", {}))
    model, tokenizer, base_hash = build_vlm(manifest.get("base", DEFAULT_MODEL), vision, seed=seed)
    model = load_adapter(model, base_hash, adapter_dir, trainable=trainable, task=task)
    if merge:
        model = model.merge_and_unload()
        model.to(generation.dtype(model.device)).eval()
    agent = VLMAgent(model, tokenizer, task, base_hash, manifest.get("adapter_hash", "unknown"),
                     generation=generation, vision=vision, seed=seed, prompt_version=manifest.get("prompt_version"))
    agent.remember(read_drafts(adapter_dir))
    name = adapter_dir.parent.name if adapter_dir.name in ("adapter", "checkpoint") else adapter_dir.name
    agent.label = f"{stage_chain(manifest)} ({name})"
    return agent


def stage_chain(manifest: dict) -> str:
    """'SFT', 'SFT+GRPO', ...: the training stages that made an adapter, oldest first."""
    stages, recipe = [], manifest.get("recipe")
    while recipe:
        stages.append(str(recipe.get("stage", "?")).upper())
        recipe = recipe.get("parent")
    return "+".join(reversed(stages)) or "adapter"


def zero_shot_agent(task: str, generation: GenerationConfig | None = None, base: str = DEFAULT_MODEL,
                    seed: int = 0) -> VLMAgent:
    """The assembled VLM without any adapter (the language model as shipped, a fresh vision tower)."""
    vision, generation = VisionConfig(), generation or GenerationConfig()
    model, tokenizer, base_hash = build_vlm(base, vision, seed=seed)
    model.to(generation.dtype(model.device))
    agent = VLMAgent(model, tokenizer, task, base_hash, generation=generation, vision=vision, seed=seed)
    agent.label = "zero-shot"
    return agent
