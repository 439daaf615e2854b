"""Adapts gin-config 0.5.0 (the last PyPI release, Nov 2021).

- `gin.config.parse_config_file` calls `importlib.util` without importing it, which crashes in a
  fresh process once a search path is added and a file is missing under the first prefix.
- `gin.torch` imports `distutils` (gone in Python 3.12 without setuptools), so the torch classes a
  .gin file may reference are registered here instead of importing `gin.torch`.
- gin keeps the search prefixes in a module list that starts with '' (the working directory);
  `set_search_prefixes` replaces it so includes resolve only from the configured roots.
"""

import importlib.util  # noqa: F401  (see the module docstring)

import gin
import gin.config


def set_search_prefixes(prefixes):
    """Makes gin resolve relative `include` paths against `prefixes` only, in order."""
    gin.config._LOCATION_PREFIXES[:] = [str(p) for p in prefixes]


def unset_required_macros():
    """Names of the macros still bound to `%gin.REQUIRED`, sorted.

    gin's own finalize check reports these as 'NAME/macro.value set to `%gin.REQUIRED` but not
    subsequently overridden', which does not say how to set them.
    """
    names = []
    for (name, selector), params in gin.config._CONFIG.items():
        value = params.get("value")
        if (selector == "gin.macro" and isinstance(value, gin.config.ConfigurableReference)
                and value.configurable.wrapped == gin.config._retrieve_constant
                and value.scoped_configurable_fn() is gin.REQUIRED):
            names.append(name)
    return sorted(names)


def reset():
    """Clears every binding and unlocks the config (gin.finalize locks it), as in a new process."""
    gin.config._set_config_is_locked(False)
    gin.clear_config(clear_constants=False)
