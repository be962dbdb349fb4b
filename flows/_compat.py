"""Config models the flows compose, imported from the packages that own them.

Each section's model belongs to its package (teachers, filters, training); this module
is the one place flows import them from.
"""

from __future__ import annotations

from generators.judge import JudgeConfig
from generators.teachers.config import TeacherConfig
from training.config import TrainConfig

from filters.config import FilterConfig as FiltersConfig

__all__ = ["TeacherConfig", "FiltersConfig", "JudgeConfig", "TrainConfig"]
