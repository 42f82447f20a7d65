"""Engram recipes: a writer (layer-L states -> N vectors) and a reader (how they enter the next pass)."""

from . import catalog  # noqa: F401  (registers the built-in recipes)
from .base import (DEFAULT, PORTABLE, Placement, Recipe, Written, all_recipes, default_for, get_recipe, recipe_names,
                   register)

__all__ = ["DEFAULT", "PORTABLE", "Placement", "Recipe", "Written", "all_recipes", "default_for", "get_recipe",
           "recipe_names", "register"]
