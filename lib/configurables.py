"""Imports every module that defines a configurable, so gin knows all names before parsing.

Model builders import torchtune inside their bodies, so registering costs no torchtune import.
"""

from lib import (checkpointing, dpo_losses, losses, optim, parallel, reporting,  # noqa: F401
                 rewards, schedules, trainer)
from lib.data import preference_data, prompt_data, sft_data, tokenizer  # noqa: F401
from lib.models import hf, llama, lora, qwen2  # noqa: F401
from lib.tasks import dpo, grpo, reward, sft  # noqa: F401
