"""The engine's errors: a leaf module, so the recipe config and the recipes both raise them."""


class ConfigError(ValueError):
    """A recipe that cannot run, or cannot run on this model."""


class WrongModel(ConfigError):
    """A recipe's fixed tensors were made for another model (a trained writer's hidden size)."""
