"""Model weights: the registry of every file (what, where, from where, licence) and the downloader
that fills the models dir. Stages only need `model_path`, `present` and `all_present`."""
from weights.registry import (REGISTRY, Source, WeightFile, all_present, get, latentsync_names,
                              model_path, present, select)

__all__ = ["REGISTRY", "Source", "WeightFile", "all_present", "get", "latentsync_names",
           "model_path", "present", "select"]
