"""Adapts gin-config 0.5.0 (the last PyPI release, Nov 2021).

gintune parses .gin text with gin's own parser but does not let gin read files or resolve
names (lib/config/sources.py, lib/config/checks.py), which side-steps these 0.5.0 defects:
- `parse_config_file` calls `importlib.util` without importing it, and resolves `include`
  against the working directory before any search path;
- unknown macros, unread macros and wrong-typed values are accepted silently;
- `gin.torch` imports `distutils` (gone in Python 3.12 without setuptools): it is not imported,
  and no torch class is registered; builders take objects, not gin-constructed torch classes.
What remains is resetting gin's global state, which 0.5.0 spreads over two module globals.
"""

import gin
import gin.config


def reset():
    """Clears every binding and unlocks the config (gin.finalize locks it), as in a new process."""
    gin.config._set_config_is_locked(False)
    gin.clear_config(clear_constants=False)
