"""Fixtures of the decoding tests: a tiny randomly initialised LLaVA (2 text layers, hidden 64) with the real
SmolLM2 tokenizer, so the grammar meets the real 49k vocabulary and the real VLMAgent prompt path."""

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, SiglipVisionConfig

from agents.vlm.model import IMAGE_TOKEN
from agents.vlm.model_store import resolve_model


@pytest.fixture(scope="module")
def one_thread():
    """A tiny model's passes are dominated by thread hand-offs: on two cores shared with other jobs one
    thread ran a pass in 16 ms, two threads in 420 ms."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tok():
    t = AutoTokenizer.from_pretrained(resolve_model())
    t.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return t


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                         image_size=32, patch_size=16),
        text_config=LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN), vision_feature_select_strategy="full",
        vision_feature_layer=-1)
    return LlavaForConditionalGeneration(config).eval()


