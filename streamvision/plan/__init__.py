"""The logical plan: the Dataflow graph, its YAML form, validation, and rewrite rules (one per module)."""

from streamvision.plan.dataflow import Dataflow, Resources

__all__ = ["Dataflow", "Resources"]
