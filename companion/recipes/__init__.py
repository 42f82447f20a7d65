"""Engram recipes: a writer (layer-L states -> N vectors) and a reader (how they enter the next pass)."""

from .base import DEFAULT, Placement, Recipe, Written, all_recipes, get_recipe, recipe_names, register

__all__ = ["DEFAULT", "Placement", "Recipe", "Written", "all_recipes", "get_recipe", "recipe_names", "register"]
