"""Supervised warm-up of the VLM agent on the scripted experts' answers (read top to bottom).

    python -m agents.training.sft --task car --steps 200

Loss: cross-entropy on the answer tokens only (chain of thought + JSON + end token); the
prompt and the image tokens are context. LoRA on the language model's attention; the
vision tower and projector train in full (they start fresh). A checkpoint (adapter,
optimizer, step, generator states, learning curve) is written atomically every
`checkpoint_every` steps, so a run killed with -9 resumes losing at most that many steps;
`--resume` continues from it.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from agents.tasks.factory.line_frames import check_source
from agents.training.run import finish_run, resume_optimizer, save_checkpoint, start_run, trainable_parameters
from agents.training.sft_data import Example, car_examples, factory_examples
from agents.vlm.lora import LoraSettings
from agents.vlm.model import VLMAgent, training_autocast
from agents.vlm.model_store import DEFAULT_MODEL
from agents.vlm.prompts import VERSIONS
from twin.car.tracks import training_tracks
from twin.core.config import ConfigError, bounded, check_bounds, parse_config
from twin.core.progress import Progress, progress_stage


@dataclasses.dataclass(frozen=True)
class SFTArgs:
    """Supervised warm-up on the scripted experts' answers (chain of thought, then the action)."""

    task: str = "car"
    """'car' (MPC parameters) or 'factory' (part decisions)."""
    source: str = "placed"
    """Factory frames: 'placed' (one part set under the camera in an empty cell, half of them defective) or
    'line' (the frames the inspecting policy meets on the running line, agents.tasks.factory.line_frames)."""
    trigger_jitter_s: float = bounded(0.0, 0.0, 0.5)
    """Factory, source 'line': the camera trigger's latency, drawn per part from [0, this] s."""
    track_widths: tuple[float, ...] = ()
    """Car: train on each training track at every width from the first to the second number (m, wall to wall,
    0.02 m apart, e.g. 1.6 2.4), so the answer's margin is read from the half width the prompt states; empty:
    each track at its own width (three widths in all, so a policy can learn one margin by heart)."""
    base: str = DEFAULT_MODEL
    """Base language model: the default, or a local Hugging Face directory."""
    examples: int = bounded(256, 1, 1_000_000)
    """Expert examples generated for training."""
    steps: int = bounded(200, 1, 10_000_000)
    """Optimizer steps."""
    batch_size: int = bounded(4, 1, 1024)
    """Examples per optimizer step."""
    lr: float = bounded(2e-4, 1e-7, 1.0)
    """AdamW learning rate."""
    lora_r: int = bounded(16, 1, 512)
    """LoRA rank (alpha = 2 r)."""
    vision_init: str = ""
    """A vision pre-training run folder (agents.training.vision) whose tower to start from; empty: a fresh tower."""
    freeze_tower: bool = False
    """Keep the pre-trained tower of --vision-init as it is (the projector and LoRA still train). Measured on
    the factory line: SFT at 2e-4 that trains the tower too wore its linear probe from 92.4 % of line frames
    to 86.5 % (benchmarks.tower_probe), and the policy could read no more than that (docs/agent.md)."""
    bf16: bool = True
    """bfloat16 autocast in the training passes where the device computes it natively (CUDA, AVX512-BF16
    or AMX CPUs); float32 elsewhere, where emulated bfloat16 is ~30x slower. Weights stay float32."""
    seed: int = 0
    """Seeds the model, the examples and the batches."""
    checkpoint_every: int = bounded(1, 1, 1_000_000)
    """Updates between checkpoints; 1: a run killed with -9 loses at most the update in flight."""
    out: Path = Path("runs/sft-car")
    """Run folder: checkpoint/, adapter/, curve.json."""
    resume: bool = False
    """Continue from out/checkpoint if it exists."""

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.task not in VERSIONS:
            raise ConfigError(f"SFTArgs.task {self.task!r} must be one of {sorted(VERSIONS)}")
        check_source("SFTArgs", self.source, self.task, self.trigger_jitter_s)
        if self.track_widths and self.task != "car":
            raise ConfigError("SFTArgs.track_widths widens the car's tracks; drop --track-widths for the factory")
        training_tracks(self.track_widths)  # a bad range fails here, naming it
        if self.freeze_tower and not self.vision_init:
            raise ConfigError("SFTArgs.freeze_tower keeps a pre-trained tower; a fresh one frozen would see nothing. "
                              "Give --vision-init RUN (agents.training.vision) or drop --freeze-tower")


def make_examples(args: SFTArgs) -> list[Example]:
    if args.task == "car":
        return car_examples(args.examples, args.seed, split="train", tracks=training_tracks(args.track_widths))
    return factory_examples(args.examples, args.seed, args.source, args.trigger_jitter_s)


def batch_tensors(agent: VLMAgent, batch: list[Example]) -> dict[str, torch.Tensor]:
    """Prompt + answer per example, right-padded; labels only on the answer tokens."""
    tok = agent.tokenizer
    rows, labels, pixels = [], [], []
    for ex in batch:
        enc = agent.encode(ex.observation)
        answer = tok(ex.target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        prompt = enc["input_ids"][0].tolist()
        rows.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
        pixels.append(enc["pixel_values"])
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id
    batch = {
        "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
        "labels": torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels]),
        "pixel_values": torch.cat(pixels),
    }
    return {k: v.to(agent.model.device) for k, v in batch.items()}


def train_sft(args: SFTArgs, progress: Progress | None = None) -> Path:
    run = start_run(args.task, "sft", args, args.out, args.base, args.seed, resume=args.resume,
                    lora=LoraSettings(r=args.lora_r), vision_init=args.vision_init)
    model = run.model
    model.train()
    params = trainable_parameters(model, ("vision_tower",) if args.freeze_tower else ())
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    step, curve = 0, []
    state = run.trainer_state()
    if state is not None:
        resume_optimizer(optimizer, state, args.lr)
        step, curve = state["step"], state["curve"]
        torch.set_rng_state(state["torch_rng"])
    data = make_examples(args)
    run.drafts = [example.target for example in data]  # the adapter's drafts: what it learned to write
    rng = np.random.default_rng([args.seed, step])

    with progress_stage(progress, f"SFT {args.task}", args.steps, step) as bar:
        while step < args.steps:
            batch = [data[i] for i in rng.choice(len(data), size=min(args.batch_size, len(data)), replace=False)]
            t0 = time.perf_counter()
            with training_autocast(model, args.bf16):
                loss = model(**batch_tensors(run.agent, batch)).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            step += 1
            curve.append({"step": step, "loss": float(loss.detach()), "seconds": time.perf_counter() - t0})
            bar.advance(note=f"loss {float(loss.detach()):.3f}")
            if step % args.checkpoint_every == 0 or step == args.steps:
                save_checkpoint(run, {"step": step}, {"optimizer": optimizer.state_dict(), "curve": curve,
                                                      "torch_rng": torch.get_rng_state()})
    return finish_run(run, {"step": step}, curve)


def main(argv: list[str] | None = None, progress: Progress | None = None, prog: str | None = None) -> None:
    print(f"adapter: {train_sft(parse_config(SFTArgs, argv, __doc__, prog), progress)}")


if __name__ == "__main__":
    main()
