"""The tokenizer: a Hugging Face tokenizer.json through torchtune's HuggingFaceBaseTokenizer.

The same loader serves the shipped demo tokenizer and a real model's directory (Llama 3.x and
Qwen2.5 both ship tokenizer.json and tokenizer_config.json). Conversations are rendered with the
`chat_template` of tokenizer_config.json.
"""

import functools
import json
import pathlib
from typing import List

from lib.config import ConfigError, resolve_path
from lib.config.registry import configurable


# Tokens some tokenizers reserve for padding (Llama 3.1+ has the first).
RESERVED_PAD_TOKENS = ("<|finetune_right_pad_id|>", "<|pad|>", "<pad>")


def _hf_tokenizer(tokenizer_json, config_path, gen_path):
    """torchtune's HuggingFaceBaseTokenizer, reading a null bos_token or eos_token in
    tokenizer_config.json as unset (Qwen2.5 ships "bos_token": null), so generation_config.json
    supplies it; torchtune 0.6.1 refuses the null ("Could not parse bos_token from config")."""
    from torchtune.modules.transforms.tokenizers import HuggingFaceBaseTokenizer

    class _Tokenizer(HuggingFaceBaseTokenizer):
        def _get_token_from_config(self, config, key):
            return None if config.get(key) is None else super()._get_token_from_config(config,
                                                                                        key)

        def _infer_bos_eos_tokens(self):
            try:
                super()._infer_bos_eos_tokens()
            except ValueError:  # "Could not infer BOS and EOS": Tokenizer names what is missing
                pass

    return _Tokenizer(str(tokenizer_json),
                      tokenizer_config_json_path=str(config_path) if config_path else None,
                      generation_config_path=str(gen_path) if gen_path else None)


class TemplateError(ValueError):
    """A chat template that does not compile, or refuses a conversation."""


@functools.lru_cache(maxsize=8)
def _template(source: str):
    """The compiled chat template (compiled once, not once per row); TemplateError naming the
    syntax error."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"its chat_template is not valid jinja2 (line {e.lineno}: "
                            f"{e.message})") from None


class Tokenizer:
    """Encodes text to ids; renders conversations with the directory's chat template."""

    def __init__(self, directory: pathlib.Path):
        directory = pathlib.Path(directory)
        config_path = directory / "tokenizer_config.json"
        gen_path = directory / "generation_config.json"
        if not (directory / "tokenizer.json").exists():
            raise FileNotFoundError(f"{directory}: no tokenizer.json")
        if not (config_path.exists() or gen_path.exists()):
            raise FileNotFoundError(f"{directory}: no tokenizer_config.json (nor "
                                    "generation_config.json) to say which tokens are BOS and EOS")
        try:
            self._tt = _hf_tokenizer(directory / "tokenizer.json",
                                     config_path if config_path.exists() else None,
                                     gen_path if gen_path.exists() else None)
        except Exception as e:  # the tokenizers library raises plain Exceptions for bad JSON
            raise ValueError(f"{directory}: its tokenizer files cannot be read: {e}") from None
        for what, token_id in (("BOS", self._tt.bos_id), ("EOS", self._tt.eos_id)):
            if not isinstance(token_id, int):
                raise ValueError(
                    f"{directory}: neither tokenizer_config.json (bos_token, eos_token) nor "
                    "generation_config.json (bos_token_id, eos_token_id) names one "
                    f"{what} token the tokenizer knows (found {token_id!r})")
        self.config = json.loads(config_path.read_text()) if config_path.exists() else {}
        self.path = directory
        self.bos_id, self.eos_id = self._tt.bos_id, self._tt.eos_id
        self.pad_id = self._pad_id()
        self.vocab_size = self._tt.tokenizer.get_vocab_size(with_added_tokens=True)
        self.chat_template = self.config.get("chat_template")
        self._bos_text = self._tt.tokenizer.id_to_token(self.bos_id)

    def _pad_id(self) -> int:
        """The configured pad token unless it is EOS, else a reserved pad token, else EOS.

        Our own models never read or attend to padding, so any id would do for training; the
        choice matters for an HF export, whose classifier reads the score at the last token
        that is not `pad_token_id`: with pad == EOS it would read one token early.
        """
        pad = self.config.get("pad_token")
        if isinstance(pad, dict):
            pad = pad.get("content")
        for name in (pad if isinstance(pad, str) else None, *RESERVED_PAD_TOKENS):
            token_id = self._tt.tokenizer.token_to_id(name) if name else None
            if token_id is not None and token_id != self.eos_id:
                return token_id
        return self.eos_id

    def encode(self, text: str, add_bos: bool, add_eos: bool) -> List[int]:
        if add_bos and self._bos_text and text.startswith(self._bos_text):
            text = text[len(self._bos_text):]  # chat templates often write BOS themselves
        return self._tt.encode(text, add_bos=add_bos, add_eos=add_eos)

    def decode(self, ids: List[int]) -> str:
        return self._tt.decode(ids)

    def render(self, messages: List[dict]) -> str:
        """Renders messages with the chat template, as transformers does: a jinja2 sandbox with
        loop controls and `raise_exception` (no `strftime_now`: templates that date their
        system prompt fall back to their fixed date, so a row tokenizes the same every day).
        TemplateError when the template fails on these messages."""
        if not self.chat_template:
            raise ValueError(f"{self.path}/tokenizer_config.json has no chat_template; "
                             "conversational data needs one")
        import jinja2

        try:
            return _template(self.chat_template).render(
                messages=messages, add_generation_prompt=False,
                bos_token=self._bos_text or "", eos_token="")
        except jinja2.TemplateError as e:
            raise TemplateError(f"the chat template of {self.path}/tokenizer_config.json "
                                f"failed on this conversation: {e}") from None


def _check(view):
    path = view.get("build_tokenizer", "path")
    try:
        directory = resolve_path(path, "tokenizer directory")
    except ConfigError as e:
        return [("path", e.problems[0].message)]
    if not (directory / "tokenizer.json").is_file():
        return [("path", f"{directory} has no tokenizer.json")]
    try:
        template = json.loads((directory / "tokenizer_config.json").read_text()).get(
            "chat_template")
    except (OSError, ValueError, AttributeError):
        return []  # no or unreadable tokenizer_config.json: the tokenizer names it when built
    if isinstance(template, str):
        try:
            _template(template)
        except TemplateError as e:
            return [("path", f"{directory}/tokenizer_config.json: {e}")]
    return []


@configurable(check=_check, resume_sensitive=("*",))
def build_tokenizer(path: str) -> Tokenizer:
    """Loads the tokenizer of a directory.

    Args:
      path: a directory holding tokenizer.json and tokenizer_config.json (or
        generation_config.json for BOS/EOS); relative paths resolve against the search roots.
        For a real model this is the local HF checkpoint directory.
    """
    return Tokenizer(resolve_path(path, "tokenizer directory"))
