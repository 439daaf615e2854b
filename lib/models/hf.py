"""Models initialized from a local Hugging Face checkpoint directory, with either head.

The directory holds config.json and model.safetensors (or the shards that
model.safetensors.index.json lists), as `save_pretrained` writes them; another .safetensors file
there (a stale copy) is never read, as transformers would not read it. A config.json field the
models built here would not follow (an activation other than SiLU, Llama biases, a sliding
window) is refused, not ignored. The family comes from config.json's `model_type`. With a reward
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
                          "save_pretrained (config.json and model.safetensors)")
    try:
        config = json.loads(path.read_text())
    except ValueError as e:  # not JSON, or not UTF-8
        raise ConfigError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} holds a JSON {type(config).__name__}, not an object")
    if config.get("model_type") != model_type:
        raise ConfigError(f"{path} has model_type {config.get('model_type')!r}, but the config "
                          f"expects {model_type!r}")
    problem = _unsupported(config, model_type)
    if problem:
        raise ConfigError(f"{path}: {problem}")
    return directory, config


def _architecture(directory: pathlib.Path, config: dict, convert) -> dict:
    """The builder's arguments from config.json; a missing or strange field is named."""
    try:
        return convert.architecture_from_hf(config)
    except KeyError as e:
        problem = f"no {e.args[0]!r}, which the architecture needs"
    except (ValueError, TypeError) as e:
        problem = str(e)
    raise ValueError(f"{directory / 'config.json'}: {problem}")


def _unsupported(config: dict, model_type: str):
    """What in config.json the models built here would silently not follow, else None."""
    act = config.get("hidden_act", "silu")
    if act != "silu":
        return f"hidden_act={act!r}; the {model_type} models built here use 'silu' only"
    if model_type == "llama":
        for key in ("attention_bias", "mlp_bias"):
            if config.get(key):
                return f"{key}=true; the Llama models built here have no biases there"
    if model_type == "qwen2" and config.get("use_sliding_window"):
        return "use_sliding_window=true; the Qwen2 models built here attend to every position"
    head_dim, heads, width = (config.get(k) for k in ("head_dim", "num_attention_heads",
                                                      "hidden_size"))
    if None not in (head_dim, heads, width) and head_dim * heads != width:
        return (f"head_dim={head_dim} is not hidden_size / num_attention_heads; the models "
                "built here derive it from those")
    return None


INDEX = "model.safetensors.index.json"


def weight_files(directory: pathlib.Path) -> list:
    """The safetensors files transformers reads: the shards model.safetensors.index.json lists,
    else model.safetensors. Any other *.safetensors file (a stale copy) is never read."""
    index = directory / INDEX
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{index} is not a safetensors index with a weight_map "
                             f"({type(e).__name__}: {e})") from None
        files = [directory / name for name in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{index} lists {', '.join(missing[:3])}, which "
                                    f"{directory} lacks")
        return files
    if (directory / "model.safetensors").is_file():
        return [directory / "model.safetensors"]
    others = sorted(p.name for p in directory.glob("*.safetensors"))
    raise FileNotFoundError(
        f"{directory}: no model.safetensors nor {INDEX}, as save_pretrained writes them"
        + (f" ({', '.join(others[:3])} would not be read, as transformers would not)"
           if others else ""))


def _open(path: pathlib.Path):
    """safetensors' handle of `path`; a file that is not one is named."""
    from safetensors import safe_open

    try:
        return safe_open(str(path), "pt")
    except Exception as e:  # SafetensorError: truncated, or not a safetensors file
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from None


def _mismatch(where, detail) -> ValueError:
    return ValueError(f"{where}: its weights do not match the model built from its config.json "
                      f"({detail})")


def _one_label(path: pathlib.Path, shape) -> None:
    if shape[0] != 1:
        raise ValueError(f"{path}: score.weight has {shape[0]} labels; a reward model starts "
                         "from a one-label classifier (num_labels=1) or a base model")


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
      checkpoint_dir: a local directory with config.json and model.safetensors (or an index of
        shards; nothing is downloaded); relative paths resolve against the search roots.
      model_type: the family the config expects ("llama" or "qwen2"); a directory whose
        config.json says otherwise is refused.
      attn_dropout: attention dropout; 0 by default (the checkpoint's dropout is not used).
    """
    directory, config = _read_config(checkpoint_dir, model_type)
    build, convert = FAMILIES[model_type]
    # Call the undecorated builder so this model's architecture comes from config.json alone.
    model = build.__wrapped__(head, **_architecture(directory, config, convert),
                              attn_dropout=attn_dropout)
    model.hf_source = str(directory)
    if next(model.parameters()).is_meta:  # built for streaming: rank 0 reads the weights later
        model.weight_source = HFWeights(directory, config, head, convert, model.state_dict())
        model.hf_names = frozenset(model.weight_source.names)
        return model
    hf_state = load_safetensors(directory)
    score = hf_state.pop("score.weight", None)
    lm_head = hf_state.pop("lm_head.weight", None)
    if score is not None and head == "reward":
        _one_label(directory, score.shape)
    try:
        state = convert.hf_to_tune(hf_state, config)
    except Exception as e:  # torchtune's conversion raises a bare Exception for an unknown key
        raise _mismatch(directory, e) from None
    if head == "reward":
        state["output.weight"] = score if score is not None else model.output.weight.detach()
    elif not config.get("tie_word_embeddings", False):
        if lm_head is None:
            raise ValueError(f"{directory}: no lm_head.weight and tie_word_embeddings is not "
                             "set in config.json; a causal LM needs one or the other")
        state["output.weight"] = lm_head
    from lib.models.streaming import nonfinite_message

    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(nonfinite_message(name, directory))
    try:
        model.load_state_dict(state, strict=True, assign=False)
    except RuntimeError as e:  # missing, unexpected or mis-shaped keys
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise _mismatch(directory, " ".join(lines[1:3])[:300]) from None
    # What the files gave; a fresh reward head is drawn by the Trainer (lib/models/fresh.py).
    model.hf_names = frozenset(state) - ({"output.weight"} if head == "reward" and score is None
                                         else set())
    return model


class HFWeights:
    """The tensors of an HF directory under our names, read on demand (for streaming: rank 0
    reads a layer at a time; see lib/models/streaming.py). Raises ValueError, as the eager load
    does, when the directory's keys or shapes do not match the model's."""

    def __init__(self, directory: pathlib.Path, config: dict, head: str, convert,
                 model_state: dict):
        self.directory, self.config, self.convert = directory, config, convert
        self.where = {}  # our name -> (file, HF key)
        tied = config.get("tie_word_embeddings", False)
        has_lm_head = False
        for f in weight_files(directory):
            with _open(f) as handle:
                for key in handle.keys():
                    if key == "score.weight":
                        ours = "output.weight" if head == "reward" else None
                        if ours:
                            _one_label(f, handle.get_slice(key).get_shape())
                    elif key == "lm_head.weight":
                        has_lm_head = True
                        ours = "output.weight" if head == "lm" and not tied else None
                    else:
                        meta = torch.empty(handle.get_slice(key).get_shape(), device="meta")
                        try:
                            converted = convert.hf_to_tune({key: meta}, config)
                        except Exception as e:  # torchtune: a bare Exception for a strange key
                            raise _mismatch(f, e) from None
                        ours = next(iter(converted), None)
                        if ours in model_state and converted[ours].shape != model_state[ours].shape:
                            raise _mismatch(directory, (
                                f"{key} is {list(converted[ours].shape)}, the model's {ours} "
                                f"is {list(model_state[ours].shape)}"))
                    if ours is not None:
                        self.where[ours] = (f, key)
        if head == "lm" and not tied and not has_lm_head:
            raise ValueError(f"{directory}: no lm_head.weight and tie_word_embeddings is not "
                             "set in config.json; a causal LM needs one or the other")
        keys = set(model_state)
        missing = sorted(keys - set(self.where) - ({"output.weight"} if head == "reward"
                                                   else set()))
        unexpected = sorted(set(self.where) - keys)
        if missing or unexpected:
            raise _mismatch(directory, f"missing: {missing[:5]}, unexpected: {unexpected[:5]}")
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
    state = {}
    for f in weight_files(directory):
        with _open(f) as handle:
            try:
                state.update({key: handle.get_tensor(key) for key in handle.keys()})
            except Exception as e:  # SafetensorError: the data is cut short
                raise ValueError(f"{f} is not a readable safetensors file ({e})") from None
    return state
