"""Capacity planning: predict step time, memory and scaling of a training plan on a cluster.

``load_cluster`` reads a cluster description, ``profile_model`` counts a model's FLOPs and bytes,
``make_plan`` predicts every strategy on 1..N devices (see docs/plan.md for the model and its sources).
"""

from escala.plan.cluster import Cluster, Device, Link, load_cluster, parse_cluster
from escala.plan.layout import parse_layout, validate_layout
from escala.plan.planner import STRATEGIES, Plan, make_plan, predict
from escala.plan.profile import ModelProfile, profile_model
from escala.plan.step import Setting, StepCost

__all__ = [
    "STRATEGIES",
    "Cluster",
    "Device",
    "Link",
    "ModelProfile",
    "Plan",
    "Setting",
    "StepCost",
    "load_cluster",
    "make_plan",
    "parse_cluster",
    "parse_layout",
    "predict",
    "profile_model",
    "validate_layout",
]
