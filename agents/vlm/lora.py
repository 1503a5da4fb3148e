"""LoRA adapters through peft, saved in peft's format with a manifest beside them.

The manifest records what an adapter needs to be used correctly: the base model's hash
(loading onto another base is refused), the vision tower's config, the prompt version,
and the training recipe (command, seed, commit). The vision tower and projector are
saved with the adapter (`modules_to_save`), so a loaded agent reproduces its outputs
exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model

from twin.core.config import ConfigError, bounded, check_bounds

TEXT_ATTENTION = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)$"
"""LoRA goes on the language model's attention projections (not the vision tower's)."""
MANIFEST = "shakedown_manifest.json"


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    r: int = bounded(16, 1, 512)
    """Rank of the adapters."""
    alpha: int = bounded(32, 1, 1024)
    """Scale numerator (scale = alpha / r)."""
    dropout: float = bounded(0.0, 0.0, 0.9)
    """Dropout on the adapters' input during training."""
    train_vision: bool = True
    """Also train (and save) the vision tower and the projector."""

    def __post_init__(self) -> None:
        check_bounds(self)


def add_lora(model: Any, settings: LoraSettings) -> PeftModel:
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=TEXT_ATTENTION,
                        modules_to_save=["multi_modal_projector", "vision_tower"] if settings.train_vision else None)
    return get_peft_model(model, config)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def adapter_hash(adapter_dir: Path) -> str:
    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if not weights.exists():
        raise ConfigError(f"no adapter_model.safetensors in {adapter_dir}: not a saved adapter")
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:16]


def save_adapter(model: PeftModel, out_dir: Path, manifest: dict[str, Any],
                 write_extra: Callable[[Path], None] | None = None) -> str:
    """Save atomically (a complete adapter or none); returns the adapter's hash.

    `write_extra(folder)` adds files (a trainer's state) that must appear together with the
    weights. The folder is built beside the target and swapped in by two renames; between
    them only `<name>.old` exists, which `latest_complete` still finds.
    """
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)  # a leftover of a run killed while saving
    model.save_pretrained(tmp)
    (tmp / MANIFEST).write_text(json.dumps({**manifest, "adapter_hash": adapter_hash(tmp)}, indent=1))
    if write_extra is not None:
        write_extra(tmp)
    old = out_dir.with_name(out_dir.name + ".old")
    if out_dir.exists():
        if old.exists():
            shutil.rmtree(old)
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old.exists():
        shutil.rmtree(old)
    return adapter_hash(out_dir)


def latest_complete(out_dir: Path, marker: str) -> Path | None:
    """The folder save_adapter wrote last that holds `marker`: out_dir, or out_dir.old if a
    save was killed between its two renames; None if neither."""
    for candidate in (Path(out_dir), Path(out_dir).with_name(Path(out_dir).name + ".old")):
        if (candidate / marker).exists():
            return candidate
    return None


def read_manifest(adapter_dir: Path) -> dict[str, Any]:
    path = Path(adapter_dir) / MANIFEST
    if not path.exists():
        raise ConfigError(f"{adapter_dir} has no {MANIFEST}: not a Shakedown adapter")
    return json.loads(path.read_text())


def load_adapter(base_model: Any, base_hash: str, adapter_dir: Path, trainable: bool = False,
                 task: str | None = None) -> PeftModel:
    """The adapter on its base model; refuses a base model with another hash, or another task."""
    manifest = read_manifest(adapter_dir)
    if task is not None and manifest.get("task") != task:
        raise ConfigError(f"adapter {adapter_dir} was trained for the {manifest.get('task')!r} task, not {task!r}")
    if manifest.get("base_hash") != base_hash:
        raise ConfigError(f"adapter {adapter_dir} was trained on base model {manifest.get('base_hash')}, "
                          f"not on this one ({base_hash}); load the base model it names")
    return PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=trainable)
