"""The longest sequence a configured model takes, for the data checks of every task."""

from lib.models.hf import max_positions

# Builders whose max_seq_len bounds the rotary cache.
_FROM_SCRATCH = ("llama3_model", "qwen2_model")


def position_limit(view):
    """(the longest sequence Trainer.model_fn takes, where that is set, what to do), or None
    when unknown (no model bound, or an HF directory whose own check reports a problem)."""
    model = view.get("Trainer", "model_fn")
    name = getattr(model, "name", None)
    if name in _FROM_SCRATCH:
        return (view.get(name, "max_seq_len"), f"{name}.max_seq_len",
                "lower one or raise the other")
    if name == "hf_model":
        directory = view.get("hf_model", "checkpoint_dir")
        positions = max_positions(directory, view.get("hf_model", "model_type"))
        if positions:
            return (positions, f"max_position_embeddings in {directory}/config.json",
                    "lower max_length (the checkpoint was trained up to that length)")
    return None


def max_length_problems(view, data_name: str, length: int = None):
    """[(data_name.max_length, message)] when the data's sequences outgrow the model."""
    limit = position_limit(view)
    max_length = view.get(data_name, "max_length") if length is None else length
    if limit and max_length > limit[0]:
        return [(f"{data_name}.max_length", (
            f"max_length={max_length} is longer than {limit[1]}={limit[0]}; {limit[2]}"))]
    return []
