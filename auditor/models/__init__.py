"""Model references. The backends that generate and score behind them come with the model layer."""

from auditor.models.refs import ModelRef, parse_ref

__all__ = ["ModelRef", "parse_ref"]
