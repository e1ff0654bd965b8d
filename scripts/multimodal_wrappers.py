#!/usr/bin/env python3
"""Writes tiny multimodal wrappers of the llama4 and qwen3_5_moe fixtures with transformers, as the published
checkpoints are (Llama4ForConditionalGeneration, Qwen3_5MoeForConditionalGeneration), and the names they hold.

Usage: multimodal_wrappers.py SHARED_FIXTURES OUT_DIR

For each fixture: the wrapper's text_config is the fixture's config.json, its vision tower tiny and random; the
fixture's weights are loaded into the wrapper's language model (its own module, no renaming by this script), and
save_pretrained writes OUT_DIR/<fixture>/hf. OUT_DIR/<fixture>/names.json lists what it wrote: every tensor name
with its shape, and the config's top-level keys and architectures. moeport's tests hold these name lists
(src/test/resources/multimodal/) and check that the wrappers they build name tensors exactly so.

Checks on the way (exit 1 if one fails): the language model's state_dict after loading equals the fixture's tensors,
and the saved wrapper reloaded gives the same language-model logits as the fixture's model.
"""
import json
import os
import sys

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM
from transformers.models.llama4 import Llama4Config, Llama4ForConditionalGeneration
from transformers.models.qwen3_5_moe import Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration


def fixture_tensors(folder):
    index = json.load(open(os.path.join(folder, "model.safetensors.index.json")))["weight_map"]
    out = {}
    for shard in sorted(set(index.values())):
        with safe_open(os.path.join(folder, shard), framework="pt") as f:
            for name in f.keys():
                out[name] = f.get_tensor(name)
    return out


def text_config(folder):
    config = json.load(open(os.path.join(folder, "config.json")))
    for key in ("architectures", "transformers_version", "dtype"):
        config.pop(key, None)
    return config


WRAPPERS = {
    "llama4": (
        Llama4ForConditionalGeneration,
        lambda text: Llama4Config(
            text_config=text,
            vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                               vision_output_dim=64, image_size=28, patch_size=14, projector_input_dim=32,
                               projector_output_dim=text["hidden_size"]),
        ),
        lambda wrapper: wrapper.language_model,
    ),
    "qwen3_5_moe": (
        Qwen3_5MoeForConditionalGeneration,
        lambda text: Qwen3_5MoeConfig(
            text_config=text,
            vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                               out_hidden_size=text["hidden_size"], num_position_embeddings=16),
        ),
        # Qwen3_5MoeModel's language_model is the text model; the head is the wrapper's own lm_head.
        lambda wrapper: wrapper.model.language_model,
    ),
}


def main():
    shared, out_dir = sys.argv[1], sys.argv[2]
    failed = False
    torch.manual_seed(0)
    for name, (cls, make_config, language_of) in WRAPPERS.items():
        folder = os.path.join(shared, name, "hf")
        config = make_config(text_config(folder))
        wrapper = cls(config).to(torch.bfloat16).eval()
        plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
        # Load the fixture's model into the wrapper's language model by module, not by names.
        language = language_of(wrapper)
        if name == "llama4":
            language.load_state_dict(plain.state_dict())
        else:
            language.load_state_dict(plain.model.state_dict())
            wrapper.lm_head.load_state_dict(plain.lm_head.state_dict())
        target = os.path.join(out_dir, name, "hf")
        wrapper.save_pretrained(target)

        saved = {}
        for shard in sorted(f for f in os.listdir(target) if f.endswith(".safetensors")):
            with safe_open(os.path.join(target, shard), framework="pt") as f:
                for tensor in f.keys():
                    saved[tensor] = list(f.get_slice(tensor).get_shape())
        saved_config = json.load(open(os.path.join(target, "config.json")))
        names = {"architectures": saved_config["architectures"], "config_keys": sorted(saved_config),
                 "text_config_model_type": saved_config["text_config"].get("model_type"),
                 "tensors": dict(sorted(saved.items()))}
        with open(os.path.join(out_dir, name, "names.json"), "w") as f:
            json.dump(names, f, indent=1)
            f.write("\n")

        # The language tensors the wrapper saved hold the fixture's values, and the reloaded wrapper computes the same logits.
        reloaded = cls.from_pretrained(target, dtype=torch.bfloat16).eval()
        ids = torch.arange(16).reshape(1, 16) % plain.config.vocab_size
        with torch.no_grad():
            want = plain(input_ids=ids).logits
            got = reloaded(input_ids=ids).logits
        same = torch.equal(want, got)
        print(f"{'OK' if same else 'FAIL'} {name}: {cls.__name__}, {len(saved)} tensors, logits equal: {same}")
        failed |= not same
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
