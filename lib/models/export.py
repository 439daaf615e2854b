"""Writing a trained model as a Hugging Face directory.

`<dir>/model.safetensors` (the `*ForSequenceClassification` layout, `model.*` and
`score.weight`, for a reward head; the `*ForCausalLM` layout, `model.*` and `lm_head.weight`
unless tied, for an LM head), `config.json` (with the tokenizer's pad/bos/eos ids), and the
tokenizer files the run used. Every rank takes part in gathering the full weights; rank 0
writes.
"""

import json
import pathlib
import shutil

from absl import logging

from lib.models.hf import FAMILIES

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json")
# Everything an export folder (or its PEFT adapter folder) holds; launchers.export replaces
# only a folder that holds nothing else.
EXPORT_FILES = frozenset({"model.safetensors", "config.json", "adapter_model.safetensors",
                          "adapter_config.json", *TOKENIZER_FILES})


def _write_peft_adapter(full: dict, model, directory: pathlib.Path) -> None:
    """<directory>/adapter_config.json and adapter_model.safetensors, which peft loads onto
    the base model (base_model_name_or_path: the HF directory the base came from, if any)."""
    from safetensors.torch import save_file

    from lib.models.lora import peft_adapter

    family, arch = model.hf_architecture
    weights, config = peft_adapter(full, model.lora, family, arch)
    config["base_model_name_or_path"] = getattr(model, "hf_source", None)
    tmp = directory.with_name(directory.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(weights, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)


def export_hf(model, tokenizer, directory: pathlib.Path, is_main: bool, head: str) -> None:
    """Gathers the full state dict (a collective) and writes the HF directory on rank 0."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=True))
    if not is_main:
        return
    if getattr(model, "lora", None) is not None:  # adapters merged into the base weights
        from lib.models.lora import merged_state

        if head == "lm":
            _write_peft_adapter(full, model, directory.with_name(directory.name + "_adapter"))
        full = merged_state(full, model.lora)
    if head == "reward" and tokenizer.pad_id == tokenizer.eos_id:
        logging.warning("the tokenizer's pad id is its EOS id: transformers' classifier will "
                        "read the score one token before EOS; add a pad token to %s",
                        tokenizer.path)
    model_type, arch = model.hf_architecture
    convert = FAMILIES[model_type][1]
    config = {**convert.hf_config(arch, head), "pad_token_id": tokenizer.pad_id,
              "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
              "torch_dtype": "float32"}
    state = convert.tune_to_hf({k: v.contiguous() for k, v in full.items()}, config)
    tmp = directory.with_name(directory.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"),
              metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        if (tokenizer.path / name).exists():
            shutil.copy(tokenizer.path / name, tmp / name)
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)
