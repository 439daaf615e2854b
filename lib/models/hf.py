"""Models initialized from a local Hugging Face checkpoint directory, with either head.

The directory holds config.json and *.safetensors (one file or an index of shards), as
`save_pretrained` writes them. The family comes from config.json's `model_type`. With a reward
head, a `*ForSequenceClassification` checkpoint brings its `score.weight`, and a base or
causal-LM checkpoint gets a fresh head (its LM head is not used; the Trainer draws the head,
lib/models/fresh.py). With an LM head, the checkpoint's `lm_head.weight` is loaded, or the
embedding is shared when config.json says `tie_word_embeddings`. Every other key must match
exactly: there is no non-strict fallback. Built on the meta device (several ranks,
lib/models/streaming.py), the model reads nothing: it carries `weight_source`, from which rank 0
reads the tensors a layer at a time.
"""

import json
import pathlib

import torch

from lib.config import ConfigError, resolve_path
from lib.config.registry import configurable
from lib.models import llama, qwen2
from lib.models.llama import convert as llama_convert
from lib.models.qwen2 import convert as qwen2_convert

FAMILIES = {
    "llama": (llama.llama3_model, llama_convert),
    "qwen2": (qwen2.qwen2_model, qwen2_convert),
}


def _read_config(checkpoint_dir: str, model_type: str):
    """(directory, config.json contents); raises ConfigError naming what is wrong."""
    if model_type not in FAMILIES:
        raise ConfigError(f"hf_model.model_type={model_type!r}; supported: "
                          f"{', '.join(sorted(FAMILIES))}")
    directory = resolve_path(checkpoint_dir, "HF checkpoint directory")
    path = directory / "config.json"
    if not path.is_file():
        raise ConfigError(f"{directory} has no config.json; give a directory written by "
                          "save_pretrained (config.json and *.safetensors)")
    config = json.loads(path.read_text())
    if config.get("model_type") != model_type:
        raise ConfigError(f"{path} has model_type {config.get('model_type')!r}, but the config "
                          f"expects {model_type!r}")
    return directory, config


def directory_problems(view, name: str):
    """[("checkpoint_dir", message)] when configurable `name`'s checkpoint_dir and model_type
    do not name a usable HF directory."""
    try:
        _read_config(view.get(name, "checkpoint_dir"), view.get(name, "model_type"))
    except ConfigError as e:
        return [("checkpoint_dir", e.problems[0].message)]
    return []


def _check(view):
    return directory_problems(view, "hf_model")


def max_positions(checkpoint_dir: str, model_type: str):
    """config.json's max_position_embeddings, or None where the directory cannot be used (its
    own check reports why) or does not say."""
    try:
        return _read_config(checkpoint_dir, model_type)[1].get("max_position_embeddings")
    except ConfigError:
        return None


@configurable(caller_args=("head",), check=_check,
              resume_sensitive=("checkpoint_dir", "model_type"))
def hf_model(head: str, checkpoint_dir: str, model_type: str, attn_dropout: float = 0.0):
    """Builds a model from a local HF checkpoint directory and loads its weights.

    Args:
      head: passed by the Trainer from its task: "lm" (the checkpoint's LM head, or the tied
        embedding) or "reward" (its score head, or a fresh one).
      checkpoint_dir: a local directory with config.json and *.safetensors (nothing is
        downloaded); relative paths resolve against the search roots.
      model_type: the family the config expects ("llama" or "qwen2"); a directory whose
        config.json says otherwise is refused.
      attn_dropout: attention dropout; 0 by default (the checkpoint's dropout is not used).
    """
    directory, config = _read_config(checkpoint_dir, model_type)
    build, convert = FAMILIES[model_type]
    # Call the undecorated builder so this model's architecture comes from config.json alone.
    model = build.__wrapped__(head, **convert.architecture_from_hf(config),
                              attn_dropout=attn_dropout)
    model.hf_source = str(directory)
    if next(model.parameters()).is_meta:  # built for streaming: rank 0 reads the weights later
        model.weight_source = HFWeights(directory, config, head, convert, model.state_dict())
        model.hf_names = frozenset(model.weight_source.names)
        return model
    hf_state = load_safetensors(directory)
    score = hf_state.pop("score.weight", None)
    lm_head = hf_state.pop("lm_head.weight", None)
    state = convert.hf_to_tune(hf_state, config)
    if head == "reward":
        state["output.weight"] = score if score is not None else model.output.weight.detach()
    elif not config.get("tie_word_embeddings", False):
        if lm_head is None:
            raise ValueError(f"{directory}: no lm_head.weight and tie_word_embeddings is not "
                             "set in config.json; a causal LM needs one or the other")
        state["output.weight"] = lm_head
    model.load_state_dict(state, strict=True, assign=False)
    # What the files gave; a fresh reward head is drawn by the Trainer (lib/models/fresh.py).
    model.hf_names = frozenset(state) - ({"output.weight"} if head == "reward" and score is None
                                         else set())
    return model


class HFWeights:
    """The tensors of an HF directory under our names, read on demand (for streaming: rank 0
    reads a layer at a time; see lib/models/streaming.py). Raises ValueError, as the eager load
    does, when the directory's keys do not match the model's."""

    def __init__(self, directory: pathlib.Path, config: dict, head: str, convert, model_keys):
        from safetensors import safe_open

        self.directory, self.config, self.convert = directory, config, convert
        self.where = {}  # our name -> (file, HF key)
        tied = config.get("tie_word_embeddings", False)
        files = sorted(directory.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{directory}: no *.safetensors files")
        has_lm_head = False
        for f in files:
            with safe_open(str(f), "pt") as handle:
                for key in handle.keys():
                    if key == "score.weight":
                        ours = "output.weight" if head == "reward" else None
                    elif key == "lm_head.weight":
                        has_lm_head = True
                        ours = "output.weight" if head == "lm" and not tied else None
                    else:
                        meta = torch.empty(handle.get_slice(key).get_shape(), device="meta")
                        ours = next(iter(convert.hf_to_tune({key: meta}, config)), None)
                    if ours is not None:
                        self.where[ours] = (f, key)
        if head == "lm" and not tied and not has_lm_head:
            raise ValueError(f"{directory}: no lm_head.weight and tie_word_embeddings is not "
                             "set in config.json; a causal LM needs one or the other")
        keys = set(model_keys)
        missing = sorted(keys - set(self.where) - ({"output.weight"} if head == "reward"
                                                   else set()))
        unexpected = sorted(set(self.where) - keys)
        if missing or unexpected:
            raise ValueError(f"{directory}: its weights do not match the model built from its "
                             f"config.json (missing: {missing[:5]}, unexpected: "
                             f"{unexpected[:5]})")
        self.names = set(self.where)

    def read(self, names, like=None) -> dict:
        from safetensors import safe_open

        out = {}
        for name in names:
            f, key = self.where[name]
            with safe_open(str(f), "pt") as handle:
                tensor = handle.get_tensor(key)
            if key in ("score.weight", "lm_head.weight"):
                out[name] = tensor
            else:
                out.update(self.convert.hf_to_tune({key: tensor}, self.config))
        return out


def load_safetensors(directory: pathlib.Path) -> dict:
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory}: no *.safetensors files")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    return state
