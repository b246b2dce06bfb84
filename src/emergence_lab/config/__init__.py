"""A run's configuration: the composed config's schema and its checks (`schema`, `groups`), a
run's identity (`identity`: config hash, cell, name, code state) and the migration of stores
written under older schemas (`migrate`).

May import the stage packages (data, models, prune, measure, store) and the top-level modules;
never `run`, `sweep` or `report`.
"""

from emergence_lab.config.groups import (
    CHOICES,
    PRECISIONS,
    LandscapeConfig,
    PretrainConfig,
    SweepConfig,
    ThresholdConfig,
    TrackingConfig,
    TrainerConfig,
    check_folder_name,
)
from emergence_lab.config.schema import SCHEMA_GROUP, Config, register_configs, validate

__all__ = ["CHOICES", "PRECISIONS", "SCHEMA_GROUP", "Config", "LandscapeConfig", "PretrainConfig",
           "SweepConfig", "ThresholdConfig", "TrackingConfig", "TrainerConfig", "check_folder_name",
           "register_configs", "validate"]
