"""Decision logic: random search, PBT and FIRE PBT (pure ask/tell, see ``base``)."""

from .base import Controller
from .fire import FirePBT
from .fire_layout import fire_split
from .pbt import PBT
from .random_search import RandomSearch

__all__ = ["Controller", "FirePBT", "PBT", "RandomSearch", "fire_split"]
