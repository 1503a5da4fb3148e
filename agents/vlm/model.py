"""The vision-language agent: a small vision tower, a projector, and the language model.

Assembled from standard transformers classes (LlavaForConditionalGeneration with a
SigLIP-style vision tower), so peft, TRL and save_pretrained understand it. The language
model is SmolLM2-135M-Instruct by default (agents.vlm.model_store) or any local causal-LM
directory; its weights are copied in, the vision side starts fresh (it is trained on twin
frames in SFT). `VLMAgent` is a Policy: prompt + frame in, chain of thought and a parsed,
always valid action out. Everything runs on the CPU and moves to a GPU with `.to("cuda")`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerBase,
    SiglipVisionConfig,
)

from agents.vlm.constrained import Decoded, constrained_generate
from agents.vlm.model_store import DEFAULT_MODEL, model_hash, resolve_model
from agents.vlm.parsing import PARSERS
from agents.vlm.prompts import prompt_for
from agents.vlm.speculative import Drafter, PrefixCache
from twin.core.config import ConfigError, bounded, check_bounds
from twin.core.contracts import Decision, Observation

IMAGE_TOKEN = "<image>"


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """The vision tower (small: twin frames are 64x64)."""

    image_size: int = bounded(64, 16, 512)
    """Input frames are resized to image_size x image_size."""
    patch_size: int = bounded(16, 2, 64)
    """Square patch side; (image_size / patch_size)^2 image tokens per frame (16 by default: every
    prompt token costs latency on a CPU, and 16 patches suffice for twin frames)."""
    hidden_size: int = bounded(256, 32, 2048)
    """Width of the tower's transformer."""
    layers: int = bounded(4, 1, 48)
    """Transformer layers of the tower."""
    heads: int = bounded(4, 1, 32)
    """Attention heads per layer."""
    intermediate_size: int = bounded(768, 32, 8192)
    """Width of each layer's MLP."""

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.image_size % self.patch_size or self.hidden_size % self.heads:
            raise ConfigError("VisionConfig: image_size must be a multiple of patch_size, hidden_size of heads")

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def default_device() -> torch.device:
    """Where models run: $SHAKEDOWN_DEVICE if set, else a CUDA GPU if there is one, else the CPU."""
    name = os.environ.get("SHAKEDOWN_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"SHAKEDOWN_DEVICE={name!r} is not a torch device ({exc}); use e.g. cpu or cuda") from exc


def build_vlm(base: str = DEFAULT_MODEL, vision: VisionConfig | None = None,
              seed: int = 0) -> tuple[LlavaForConditionalGeneration, PreTrainedTokenizerBase, str]:
    """(model, tokenizer, base-model hash): the language model's weights, a fresh vision tower."""
    vision = vision or VisionConfig()
    model_dir = resolve_model(base)
    text = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(seed)
    config = LlavaConfig(
        vision_config=SiglipVisionConfig(hidden_size=vision.hidden_size, intermediate_size=vision.intermediate_size,
                                         num_hidden_layers=vision.layers, num_attention_heads=vision.heads,
                                         image_size=vision.image_size, patch_size=vision.patch_size),
        text_config=text.config, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="full", vision_feature_layer=-1, projector_hidden_act="gelu")
    model = LlavaForConditionalGeneration(config)
    model.model.language_model.load_state_dict(text.model.state_dict())
    if not getattr(text.config, "tie_word_embeddings", False):
        model.lm_head.load_state_dict(text.lm_head.state_dict())
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.to(default_device()).eval()
    return model, tokenizer, model_hash(model_dir)


def pixel_values(image: np.ndarray | None, size: int) -> torch.Tensor:
    """A frame as the vision tower takes it: (1, 3, size, size) in [-1, 1]; black if no frame."""
    if image is None:
        return torch.full((1, 3, size, size), -1.0)
    img = np.asarray(image, dtype=np.uint8)
    if img.shape[:2] != (size, size):
        from PIL import Image

        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    return torch.from_numpy(img).float().permute(2, 0, 1).unsqueeze(0) / 127.5 - 1.0


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """How answers are sampled."""

    max_new_tokens: int = bounded(128, 1, 4096)
    """Room for the chain of thought and the JSON (the car SFT answers run to 30-70 tokens)."""
    temperature: float = bounded(0.0, 0.0, 5.0)
    """0: greedy."""
    top_p: float = bounded(1.0, 0.01, 1.0)
    """Nucleus sampling: keep the smallest set of tokens with this much probability."""
    constrained: bool = True
    """Decode under the task's answer grammar (agents.vlm.constrained): every answer parses 'ok'
    (parameter names known and distinct, values in range; a decision from the set), and tokens the
    grammar forces cost no sampling step. An answer is never cut: one that reaches max_new_tokens is
    completed neutrally without the model (a few tokens past it; at least the grammar's shortest
    answer, ~16 tokens). False: plain transformers sampling, the parser's fallback for what it cannot read."""
    speculative: bool = True
    """With `constrained`: reuse the prompt head's key/value cache and verify lookup drafts from earlier
    answers (agents.vlm.speculative). In float32 greedy answers are the same token for token and sampled
    ones have the same distribution; only the number of model passes changes. In bfloat16 a pass over
    many tokens rounds otherwise than one-token passes, so a near-tie may go the other way (3 of 16
    held-out decisions in benchmarks/bench_agent.py), so a bfloat16 answer can depend on the answers
    decided before it."""

    calculator: bool = True
    """With `constrained`: when a car thought writes a speed and "is" (the template "nine km/h is 2.5 m/s."), the
    decoder appends the speed in m/s itself, and after "half width 0.95 less 0.18 is" the difference
    (agents.vlm.grammar.calculated): the model reads the numbers, the arithmetic is not left to it. Off: the
    model writes the result too."""
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Weights of an agent built for deciding only (its adapter merged; training keeps float32): 'auto' is
    bfloat16 where the device computes it natively (a CPU with AVX512-BF16 or AMX, a CUDA GPU with bf16) and
    float32 elsewhere, where bfloat16 is emulated and slower. On a 2-core AVX512-BF16 CPU a 24-token pass
    takes 36 ms in bfloat16 against 106 ms in float32 (benchmarks/bench_agent.py compares both). A bfloat16
    agent's policy id ends in ':bfloat16'; scenario campaigns decide in float32 (scenarios.systems)."""

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.precision not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"GenerationConfig.precision={self.precision!r}: use 'auto', 'float32' or 'bfloat16'")

    def dtype(self, device: torch.device) -> torch.dtype:
        """The weights' dtype `precision` means on `device`."""
        if self.precision == "auto":
            return torch.bfloat16 if native_bf16(device) else torch.float32
        return getattr(torch, self.precision)


class VLMAgent:
    """A Policy: frame and prompt in, chain of thought and a parsed action out."""

    def __init__(self, model: LlavaForConditionalGeneration, tokenizer: PreTrainedTokenizerBase, task: str,
                 base_hash: str, adapter_hash: str = "none", generation: GenerationConfig | None = None,
                 vision: VisionConfig | None = None, seed: int = 0, prompt_version: str | None = None) -> None:
        self.prompt_version, self._prompt = prompt_for(task, prompt_version)
        self.model, self.tokenizer, self.task, self.base_hash = model, tokenizer, task, base_hash
        self.generation = generation or GenerationConfig()
        self.vision = vision or VisionConfig()
        # bfloat16 weights decide (slightly) differently: their id says so, float32 keeps the plain id
        half = "" if model.dtype == torch.float32 else f":{str(model.dtype).removeprefix('torch.')}"
        self.policy_id = f"vlm:{base_hash}:{adapter_hash}:{self.prompt_version}{half}"
        self.label = f"VLM ({adapter_hash})"
        self._gen = torch.Generator().manual_seed(seed)
        self.last_decoded: Decoded | None = None
        """What the last constrained decision's decoding took (passes, drafted tokens, seconds)."""
        self.drafter = Drafter()
        self.prefix = PrefixCache(stop_token=getattr(model.config, "image_token_id", -1))

    def remember(self, texts: Sequence[str]) -> None:
        """Seed the drafter with answer texts (an adapter's drafts; agents.vlm.speculative)."""
        for text in texts:
            self.drafter.remember(self.tokenizer(text, add_special_tokens=False)["input_ids"] +
                                  [self.tokenizer.eos_token_id])

    def encode(self, obs: Observation) -> dict[str, torch.Tensor]:
        """Token ids (the prompt version places the image tokens) and pixel values for one observation."""
        content = self._prompt(obs, IMAGE_TOKEN * self.vision.tokens)
        enc = self.tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                                 return_tensors="pt", return_dict=True)
        enc["pixel_values"] = pixel_values(obs.image, self.vision.image_size).to(self.model.dtype)
        return {k: v.to(self.model.device) for k, v in enc.items()}

    @torch.no_grad()
    def generate(self, obs: Observation) -> str:
        enc = self.encode(obs)
        g = self.generation
        if g.constrained:
            fast = {"drafter": self.drafter, "prefix": self.prefix} if g.speculative else {}
            decoded = constrained_generate(self.model, self.tokenizer, enc, self.task, temperature=g.temperature,
                                           max_new_tokens=g.max_new_tokens, top_p=g.top_p, generator=self._gen,
                                           calculator=g.calculator, **fast)
            self.last_decoded = decoded
            return self.tokenizer.decode(decoded.answers[0], skip_special_tokens=True)
        sample = g.temperature > 0
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self._gen)))
        out = self.model.generate(**enc, max_new_tokens=g.max_new_tokens, do_sample=sample,
                                  temperature=g.temperature if sample else None, top_p=g.top_p if sample else None,
                                  pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    def decide(self, observation: Observation) -> Decision:
        """Never raises on a bad answer: the parser falls back to the task's safe action and says so."""
        raw = self.generate(observation)
        parsed = PARSERS[self.task](raw)
        status = parsed.status if not parsed.notes else f"{parsed.status}: {parsed.notes}"
        return Decision(action=parsed.action, policy_id=self.policy_id, thought=parsed.thought, raw_output=raw,
                        parse_status=status)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively: CUDA with bf16, or a CPU with AVX512-BF16 or AMX.
    Elsewhere bfloat16 is emulated: a 512x512 matmul took 228 ms against 7.7 ms in float32 on an
    AVX2-only EPYC, so autocast there would make training ~30x slower, not faster."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def training_autocast(model: torch.nn.Module, enabled: bool = True) -> torch.autocast:
    """bfloat16 autocast for training passes on the model's device (weights stay float32), where
    the device computes bfloat16 natively (`native_bf16`); float32 elsewhere.

    Measured on a 2-core CPU with AVX512-BF16: a LoRA forward+backward runs 1.5-1.7x faster.
    Sampling stays float32 there, where autocast's per-step casts made decoding slower.
    """
    use = enabled and native_bf16(model.device)
    return torch.autocast(device_type=model.device.type, dtype=torch.bfloat16, enabled=use)
