"""Pre-training the vision tower on twin frames with privileged labels (read top to bottom).

    python -m agents.training.vision --task factory --frames 1024 --epochs 8

The twin knows what each frame shows, so the tower learns to see it before the language
model is asked to talk about it: factory frames are labelled with defective / which defect
/ which part kind (classification), car frames with the car's lateral offset, heading
error and the track's curvature (regression, standardised). The tower is the same
SiglipVisionModel the VLM uses (same config, same parameter names) plus one linear head
per label on the mean of its patch features; only the tower is kept. Frames for the
held-out check come from another seed. Writes out/vision_tower.safetensors,
out/metrics.json (per-epoch loss and held-out scores) and out/vision.json (its config).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import SiglipVisionConfig, SiglipVisionModel

from agents.tasks.factory.line_frames import SOURCES, check_source
from agents.vlm.model import VisionConfig, default_device, pixel_values
from twin.core.config import ConfigError, bounded, check_bounds, parse_config
from twin.core.progress import Progress, progress_stage

CLASSES = {"factory": {"defective": 2, "defect": 5, "kind": 3}, "car": {}}
REGRESSION = {"factory": (), "car": ("lateral_offset", "heading_error", "curvature")}
FLIPS = {"factory": True, "car": False}
"""Random flips as augmentation: a flipped part keeps its labels; a flipped road would not."""
TOWER_FILE = "vision_tower.safetensors"


@dataclasses.dataclass(frozen=True)
class VisionPretrainArgs:
    """Pre-train the VLM's vision tower on twin frames with privileged labels."""

    task: str = "factory"
    """'factory' (defect and kind labels) or 'car' (pose and curvature labels)."""
    source: str = "placed"
    """Factory frames: 'placed' (one part set under the camera in an empty cell: fast, half of them defective)
    or 'line' (the frames the inspecting policy meets on the running line). Factory held-out scores are
    reported on both kinds ('line_' keys for the line's), whichever trains."""
    trigger_jitter_s: float = bounded(0.0, 0.0, 0.5)
    """Factory, source 'line': the camera trigger's latency, drawn per part from [0, this] s (the line's held-out
    frames too): a tower that has seen parts centimetres past the inspection line."""
    frames: int = bounded(1024, 8, 1_000_000)
    """Training frames rendered in the twin."""
    heldout_frames: int = bounded(256, 8, 1_000_000)
    """Frames rendered apart from training's, for the held-out scores."""
    shift_px: int = bounded(0, 0, 32)
    """Factory: move each training frame by a random whole number of pixels, up to this far along each axis (edges
    repeated), as augmentation. A tower of 16-pixel patches sees a part a few pixels further on as a different
    picture; a camera trigger that fires late (FactoryParams.trigger_jitter_s) shows it just so."""
    epochs: int = bounded(8, 1, 10_000)
    """Passes over the training frames."""
    batch_size: int = bounded(32, 1, 4096)
    """Frames per optimizer step."""
    lr: float = bounded(2e-4, 1e-7, 1.0)
    """AdamW learning rate."""
    seed: int = 0
    """Seeds the frames rendered and the tower's initial weights."""
    out: Path = Path("runs/vision-factory")
    """Run folder: tower weights, probe heads, metrics.json."""

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.task not in CLASSES:
            raise ConfigError(f"VisionPretrainArgs.task {self.task!r} must be one of {sorted(CLASSES)}")
        check_source("VisionPretrainArgs", self.source, self.task, self.trigger_jitter_s)
        if self.shift_px and not FLIPS[self.task]:
            raise ConfigError(f"VisionPretrainArgs.shift_px: a {self.task} frame's labels change when it moves; "
                              "use it for the factory only")


def labelled_frames(task: str, n: int, seed: int, source: str = "placed",
                    trigger_jitter_s: float = 0.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """n frames (n, H, W, 3) uint8 and their privileged labels, name -> (n,) array (factory line frames: the
    camera trigger late by up to trigger_jitter_s)."""
    if task == "factory":
        from agents.tasks.factory.envs import KIND_ORDER
        from agents.tasks.factory.line_frames import factory_frames
        from twin.factory.parts import DEFECTS

        frames, specs = factory_frames(n, seed, source, trigger_jitter_s)
        return frames, {"defective": np.array([s.defective for s in specs], np.int64),
                        "defect": np.array([DEFECTS.index(s.defect) for s in specs], np.int64),
                        "kind": np.array([KIND_ORDER.index(s.kind) for s in specs], np.int64)}
    return car_frames(n, seed)


def car_frames(n: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Front-camera frames from random poses on the training tracks (offset across the lane,
    heading off the track direction), labelled with the pose and the curvature 1-3 m ahead."""
    from twin.car.randomization import CAR_RANDOMIZATION
    from twin.car.tracks import TRAIN_TRACKS
    from twin.car.twin import CarTwin, CarTwinConfig

    rng = np.random.default_rng(seed)
    twins = [CarTwin(CarTwinConfig(track=t, camera=True, lidar=False, randomization=CAR_RANDOMIZATION))
             for t in TRAIN_TRACKS]
    frames, labels = [], {k: [] for k in REGRESSION["car"]}
    try:
        for _ in range(n):
            twin = twins[int(rng.integers(len(twins)))]
            track = twin.track
            s = float(rng.uniform(0, track.length))
            d = float(rng.uniform(-0.6, 0.6)) * track.half_width
            twin.reset(rng, s=s, d=d)
            twin.vs = dataclasses.replace(twin.vs, yaw=twin.vs.yaw + float(rng.uniform(-0.35, 0.35)))
            st = twin.state
            frames.append(twin.camera())
            labels["lateral_offset"].append(st.d)
            labels["heading_error"].append(st.alpha)
            labels["curvature"].append(float(np.mean(track.curvature_at(np.mod(s + np.linspace(1, 3, 5), track.length)))))
    finally:
        for twin in twins:
            twin.close()
    return np.stack(frames), {k: np.array(v, np.float32) for k, v in labels.items()}


def siglip_config(vision: VisionConfig) -> SiglipVisionConfig:
    """The tower's config exactly as build_vlm makes it, so the weights drop into the VLM."""
    return SiglipVisionConfig(hidden_size=vision.hidden_size, intermediate_size=vision.intermediate_size,
                              num_hidden_layers=vision.layers, num_attention_heads=vision.heads,
                              image_size=vision.image_size, patch_size=vision.patch_size)


class Probe(torch.nn.Module):
    """The tower and one linear head per label on its mean patch feature."""

    def __init__(self, vision: VisionConfig, task: str) -> None:
        super().__init__()
        self.tower = SiglipVisionModel(siglip_config(vision))
        heads = {k: c for k, c in CLASSES[task].items()} | {k: 1 for k in REGRESSION[task]}
        self.heads = torch.nn.ModuleDict({k: torch.nn.Linear(vision.hidden_size, c) for k, c in heads.items()})

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        feature = self.tower(pixel_values=pixels).last_hidden_state.mean(1)
        return {k: head(feature).squeeze(-1) for k, head in self.heads.items()}


def to_pixels(frames: np.ndarray, size: int) -> torch.Tensor:
    return torch.cat([pixel_values(f, size) for f in frames])


def losses(out: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cross-entropy per class label, mean squared error per standardised regression label."""
    return {k: torch.nn.functional.cross_entropy(out[k], t) if t.dtype == torch.int64
            else torch.nn.functional.mse_loss(out[k], t) for k, t in targets.items()}


@torch.no_grad()
def scores(probe: Probe, pixels: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, float]:
    """Held-out accuracy per class label, R^2 per regression label."""
    probe.eval()
    out = probe(pixels)
    probe.train()
    result = {}
    for k, t in targets.items():
        if t.dtype == torch.int64:
            result[f"{k}_accuracy"] = float((out[k].argmax(-1) == t).float().mean())
        else:
            result[f"{k}_r2"] = float(1 - ((out[k] - t) ** 2).mean() / t.var().clamp_min(1e-12))
    return result


def pretrain(args: VisionPretrainArgs, vision: VisionConfig | None = None, progress: Progress | None = None) -> Path:
    vision = vision or VisionConfig()
    torch.manual_seed(args.seed)
    frames, labels = labelled_frames(args.task, args.frames, args.seed, args.source, args.trigger_jitter_s)
    held_frames, held_labels = labelled_frames(args.task, args.heldout_frames, args.seed + 10_000, args.source,
                                               args.trigger_jitter_s)
    # Regression targets standardised with the training set's statistics.
    stats = {k: (float(v.mean()), float(v.std() + 1e-8)) for k, v in labels.items() if v.dtype != np.int64}

    def tensors(raw: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v) if k not in stats else torch.from_numpy((v - stats[k][0]) / stats[k][1])
                for k, v in raw.items()}

    device = default_device()
    x, y = to_pixels(frames, vision.image_size).to(device), {k: v.to(device) for k, v in tensors(labels).items()}
    # Held-out frames of the training source, and for the factory of the other source too: a tower trained
    # on placed parts is judged on the line's frames as well, since those are what the policy decides on.
    # Score keys: placed frames (and the car's) unprefixed, the line's with 'line_'.
    raw_held = {args.source: (held_frames, held_labels)}
    if args.task == "factory":
        other = next(s for s in SOURCES if s != args.source)
        raw_held[other] = labelled_frames(args.task, args.heldout_frames, args.seed + 20_000, other)
    held = {("line_" if source == "line" else ""): (to_pixels(hf, vision.image_size).to(device),
                                                   {k: v.to(device) for k, v in tensors(hl).items()})
            for source, (hf, hl) in raw_held.items()}

    def heldout() -> dict[str, float]:
        return {f"{prefix}{k}": v for prefix, (hx, hy) in held.items() for k, v in scores(probe, hx, hy).items()}

    probe = Probe(vision, args.task).to(device)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=args.lr, weight_decay=0.01)
    rng = np.random.default_rng(args.seed)
    history = [{"epoch": 0, **heldout()}]
    batches = max(1, len(x) // args.batch_size)
    with progress_stage(progress, f"vision {args.task}", args.epochs * batches) as bar:
        for epoch in range(1, args.epochs + 1):
            t0, total = time.perf_counter(), 0.0
            for idx in np.array_split(rng.permutation(len(x)), batches):
                batch = x[idx]
                if FLIPS[args.task]:
                    flip = torch.from_numpy(rng.random((len(idx), 2)) < 0.5).to(device)
                    batch = torch.where(flip[:, 0, None, None, None], batch.flip(-1), batch)
                    batch = torch.where(flip[:, 1, None, None, None], batch.flip(-2), batch)
                if args.shift_px:
                    batch = shifted(batch, rng.integers(-args.shift_px, args.shift_px + 1, (len(idx), 2)))
                terms = losses(probe(batch), {k: v[idx] for k, v in y.items()})
                loss = sum(terms.values())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
                bar.advance()
            history.append({"epoch": epoch, "loss": total / batches, "seconds": time.perf_counter() - t0,
                            **heldout()})
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in probe.tower.state_dict().items()}, args.out / TOWER_FILE)
    (args.out / "vision.json").write_text(json.dumps(dataclasses.asdict(vision)))
    (args.out / "metrics.json").write_text(json.dumps({"task": args.task, "source": args.source, "frames": args.frames,
                                                       "heldout_frames": args.heldout_frames, "history": history,
                                                       "label_stats": stats}, indent=1))
    return args.out


def shifted(batch: torch.Tensor, shifts: np.ndarray) -> torch.Tensor:
    """Each (C, H, W) image of `batch` moved by whole pixels (dx, dy) per row of `shifts`, its edges repeated
    into the gap (nearest sampling on an affine grid: the shift is exact)."""
    n, _, h, w = batch.shape
    theta = torch.zeros(n, 2, 3, dtype=batch.dtype, device=batch.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    # The grid says where each output pixel samples from: -shift, in units of half the image.
    theta[:, 0, 2] = torch.from_numpy(-2.0 * shifts[:, 0] / w).to(batch)
    theta[:, 1, 2] = torch.from_numpy(-2.0 * shifts[:, 1] / h).to(batch)
    grid = torch.nn.functional.affine_grid(theta, list(batch.shape), align_corners=False)
    return torch.nn.functional.grid_sample(batch, grid, mode="nearest", padding_mode="border", align_corners=False)


def saved_config(pretrained: Path) -> VisionConfig:
    """The VisionConfig a pre-training run folder's tower was built with."""
    return VisionConfig(**json.loads((Path(pretrained) / "vision.json").read_text()))


def load_tower(model: torch.nn.Module, pretrained: Path, vision: VisionConfig) -> None:
    """Copy a pre-trained tower into a VLM built with the same VisionConfig (checked)."""
    pretrained = Path(pretrained)
    saved = saved_config(pretrained)
    if saved != vision:
        raise ConfigError(f"pre-trained tower in {pretrained} has {saved}, the VLM has {vision}; "
                          "pre-train with the same VisionConfig")
    model.model.vision_tower.load_state_dict(load_file(pretrained / TOWER_FILE, device=str(model.device)))


def main(argv: list[str] | None = None, progress: Progress | None = None, prog: str | None = None) -> None:
    out = pretrain(parse_config(VisionPretrainArgs, argv, __doc__, prog), progress=progress)
    print(json.dumps(json.loads((out / "metrics.json").read_text())["history"][-1]))


if __name__ == "__main__":
    main()
