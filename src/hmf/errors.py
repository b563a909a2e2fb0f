"""The configuration error, at the bottom of the package so that every layer can raise it
(hmf.config checks the config and reads the model list; the model registry checks overrides)."""


class ConfigError(ValueError):
    """A config that does not match the schema; the message names the key."""
