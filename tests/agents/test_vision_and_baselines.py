"""Vision pre-training on privileged labels, loading adapters as trained, SB3 baselines, the train CLI."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from stable_baselines3.common.env_checker import check_env

from agents.policies.sb3 import SB3Policy
from agents.tasks.car.instruction_env import CarInstructionEnv, CarTaskConfig
from agents.tasks.factory.envs import FactoryInspectionEnv, FactoryTaskConfig
from agents.tasks.factory.line_frames import FIRST_SEED, line_frames
from agents.training.sb3 import SB3Args, make_env, train_sb3
from agents.training.sft import SFTArgs, train_sft
from agents.training.vision import VisionPretrainArgs, labelled_frames, load_tower, pretrain, shifted
from agents.vlm.model import VisionConfig, build_vlm
from agents.vlm.prompts import PROMPTS, prompt_for
from shakedown.cli import main
from twin.core.config import ConfigError


def test_car_frames_are_labelled_with_the_pose_they_show():
    frames, labels = labelled_frames("car", 6, seed=0)
    assert frames.shape == (6, 64, 64, 3) and frames.dtype == np.uint8
    assert set(labels) == {"lateral_offset", "heading_error", "curvature"}
    assert np.ptp(labels["lateral_offset"]) > 0.05 and np.ptp(labels["heading_error"]) > 0.05  # poses vary
    again, labels2 = labelled_frames("car", 6, seed=0)
    assert np.array_equal(frames, again) and all(np.array_equal(labels[k], labels2[k]) for k in labels)


def test_line_frames_are_what_the_inspecting_policy_sees_labelled_with_the_part_it_shows():
    frames, specs = line_frames(6, seed=3, parts_per_episode=4)
    assert frames.shape == (6, 64, 64, 3) and frames.dtype == np.uint8 and len(specs) == 6
    again, specs2 = line_frames(6, seed=3, parts_per_episode=4)
    assert np.array_equal(frames, again) and specs == specs2  # same seed, same frames
    # The first frame of a line episode is the env's own observation of its first part.
    env = FactoryInspectionEnv(FactoryTaskConfig(parts_per_episode=4))
    rng = np.random.default_rng([3, 7])
    obs, _ = env.reset(seed=int(rng.integers(FIRST_SEED, 2**31)))
    assert np.array_equal(obs["image"], frames[0]) and env.part.spec == specs[0]
    env.close()
    plain, labels = labelled_frames("factory", 6, seed=3, source="line")
    assert list(labels["defective"]) == [int(s.defective) for s in line_frames(6, 3)[1]]
    with pytest.raises(ConfigError, match="source 'line' is for the factory"):
        VisionPretrainArgs(task="car", source="line")
    with pytest.raises(ConfigError, match="must be one of"):
        VisionPretrainArgs(source="belt")
    with pytest.raises(ConfigError, match="give --source line"):
        VisionPretrainArgs(source="placed", trigger_jitter_s=0.1)
    late, late_labels = labelled_frames("factory", 6, seed=3, source="line", trigger_jitter_s=0.15)
    assert all(np.array_equal(late_labels[k], labels[k]) for k in labels)  # the same parts ...
    assert not np.array_equal(late, plain)  # ... seen further on


def test_shift_augmentation_moves_each_frame_by_whole_pixels_and_repeats_its_edges():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    y = shifted(x, np.array([[2, -1], [0, 0]]))  # the first 2 px right and 1 px up; the second stays
    assert torch.equal(y[1], x[1])
    assert torch.equal(y[0][:, :-1, 2:], x[0][:, 1:, :-2])  # exact: every value moved, none blended
    assert torch.equal(y[0][:, :, 0], y[0][:, :, 2]) and torch.equal(y[0][:, -1], y[0][:, -2])  # edges repeated
    with pytest.raises(ConfigError, match="factory only"):
        VisionPretrainArgs(task="car", shift_px=4)


def test_pretrained_tower_drops_into_the_vlm_and_a_mismatch_is_refused(tmp_path):
    out = pretrain(VisionPretrainArgs(task="factory", frames=16, heldout_frames=8, epochs=1, batch_size=8,
                                      out=tmp_path / "v"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [0, 1]
    # Judged on placed parts and on the line's frames (what the policy decides on), whichever trained it.
    assert {"defective_accuracy", "defect_accuracy", "kind_accuracy", "line_defective_accuracy",
            "line_defect_accuracy", "line_kind_accuracy"} <= set(metrics["history"][-1])
    model, _, _ = build_vlm(seed=0)
    load_tower(model, out, VisionConfig())
    saved = load_file(out / "vision_tower.safetensors")
    loaded = model.model.vision_tower.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())
    with pytest.raises(ConfigError, match="same VisionConfig"):
        load_tower(model, out, VisionConfig(patch_size=8))

    # SFT from that tower: --freeze-tower keeps it bit for bit while the projector learns; without it the
    # tower moves (the check can fail). A frozen fresh tower is refused.
    def sft_weights(freeze: bool) -> dict[str, torch.Tensor]:
        adapter = train_sft(SFTArgs(task="factory", examples=2, steps=1, batch_size=2, lr=1e-2, vision_init=str(out),
                                    freeze_tower=freeze, out=tmp_path / f"sft-{freeze}"))
        return load_file(adapter / "adapter_model.safetensors")

    def tower_matches(weights: dict[str, torch.Tensor]) -> bool:
        tower = {k: v for k, v in weights.items() if "vision_tower" in k}
        assert len(tower) == len(saved)
        return all(torch.equal(next(v for k, v in tower.items() if k.endswith("." + name)), w)
                   for name, w in saved.items())

    frozen, trained = sft_weights(True), sft_weights(False)
    assert tower_matches(frozen) and not tower_matches(trained)
    start = model.model.multi_modal_projector.state_dict()  # build_vlm(seed=0): the projector SFT starts from
    moved = [not torch.equal(v, start[k.split("multi_modal_projector.")[1].replace("modules_to_save.default.", "")])
             for k, v in frozen.items() if "multi_modal_projector" in k]
    assert moved and all(moved)
    with pytest.raises(ConfigError, match="Give --vision-init"):
        SFTArgs(task="factory", freeze_tower=True)
    with pytest.raises(ConfigError, match="give --source line"):  # placed parts have no trigger to be late
        SFTArgs(task="factory", source="placed", trigger_jitter_s=0.1)


def test_prompt_versions_stay_buildable_and_unknown_ones_are_refused():
    assert {"car-v1", "car-v2", "factory-v1"} <= set(PROMPTS)
    assert prompt_for("car")[0] == "car-v2" and prompt_for("car", "car-v1")[0] == "car-v1"
    with pytest.raises(ConfigError, match="not a car prompt"):
        prompt_for("car", "factory-v1")
    with pytest.raises(ConfigError, match="unknown task"):
        prompt_for("boat")


def test_baseline_envs_pass_check_env_and_images_reach_the_observation():
    env = CarInstructionEnv(CarTaskConfig(tracks=("oval",), duration_s=0.5, image_obs=True))
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=3)
    assert np.array_equal(obs["image"], info["observation"].image)
    env.close()
    for obs_kind in ("state", "image"):
        wrapped = make_env("car", obs_kind, duration_s=0.5)
        check_env(wrapped, skip_render_check=True)
        assert ("image" in wrapped.observation_space.spaces) == (obs_kind == "image")
        wrapped.close()


def test_sb3_baseline_trains_saves_and_decides_like_the_env_sees(tmp_path):
    out = train_sb3(SB3Args(world="factory", obs="image", timesteps=8, n_steps=8, batch_size=8, out=tmp_path / "b"))
    policy = SB3Policy(out)
    env = FactoryInspectionEnv(FactoryTaskConfig(parts_per_episode=2))
    obs, info = env.reset(seed=0)
    decision = policy.decide(info["observation"])
    assert decision.action["decision"] in ("accept", "reject", "hold")
    # the Policy builds the same arrays the env gave SB3
    direct, _ = policy.model.predict(obs, deterministic=True)
    assert decision.action["decision"] == ("accept", "reject", "hold")[int(direct)]
    env.close()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world"] == "factory" and manifest["obs"] == "image"


def test_train_cli_forwards_stage_flags_and_refuses_a_wrong_world(tmp_path, capsys):
    assert main(["train", "factory", "--stage", "vision", "--frames", "8", "--heldout-frames", "8", "--epochs", "1",
                 "--out", str(tmp_path / "v")]) == 0
    assert (tmp_path / "v" / "vision_tower.safetensors").exists()
    assert main(["train", "factory", "--stage", "grpo"]) == 2
    assert "stage 'grpo' trains car" in capsys.readouterr().err


def test_shipped_adapter_loads_as_trained_and_decides_on_a_held_out_track():
    from agents.control.mpc_params import MPCParams
    from agents.vlm.loading import agent_from_adapter
    from agents.vlm.lora import read_manifest
    from shakedown.demo import SHIPPED_ADAPTER

    manifest = read_manifest(SHIPPED_ADAPTER)
    assert manifest["task"] == "car" and manifest["recipe"]["commit"]
    agent = agent_from_adapter(SHIPPED_ADAPTER, "car", merge=True)
    env = CarInstructionEnv(CarTaskConfig(tracks=("sprint",), split="heldout", duration_s=0.5))
    _, info = env.reset(seed=11, options={"category": "velocity"})
    decision = agent.decide(info["observation"])
    env.close()
    # the trained format (possibly with a field repaired), not a fallback
    assert decision.parse_status.split(":")[0] in ("ok", "repaired"), decision.raw_output
    assert MPCParams(**decision.action) and decision.thought


def test_shipped_factory_adapter_sees_the_defects_on_parts_it_never_saw():
    from agents.training.sft_data import factory_examples
    from agents.vlm.loading import agent_from_adapter
    from agents.vlm.lora import read_manifest
    from shakedown.demo.drive import SHIPPED_ADAPTERS

    adapter = SHIPPED_ADAPTERS / "factory"
    manifest = read_manifest(adapter)
    assert manifest["task"] == "factory" and manifest["recipe"]["args"]["freeze_tower"] == "True"
    agent = agent_from_adapter(adapter, "factory", merge=True)
    parts = [ex.observation for ex in factory_examples(16, seed=99, source="line")]  # training used seed 0
    decisions = [agent.decide(obs) for obs in parts]
    assert all(d.parse_status == "ok" and d.thought for d in decisions)
    right = [(d.action["decision"] == "reject") == obs.privileged["defective"] for d, obs in zip(decisions, parts)]
    defective = sum(obs.privileged["defective"] for obs in parts)
    # accepting everything would score 16 - defective; the adapter reads the defects
    assert defective >= 3 and sum(right) >= 14, (sum(right), defective)


def test_factory_sft_examples_come_from_the_line_when_asked():
    from agents.training.sft import SFTArgs
    from agents.training.sft_data import factory_examples

    examples = factory_examples(4, seed=3, source="line")
    frames, specs = line_frames(4, seed=3)
    assert all(np.array_equal(ex.observation.image, f) for ex, f in zip(examples, frames))
    assert [ex.observation.privileged["defective"] for ex in examples] == [s.defective for s in specs]
    assert all(("Reject" in ex.target) == s.defective for ex, s in zip(examples, specs))
    with pytest.raises(ConfigError, match="'line' is for the factory"):
        SFTArgs(task="car", source="line")
