"""Model references and the backends behind them, all on one interface (auditor.models.base.Model).

Local models load through auditor.models.loading: placed by `Placement` (device and dtype, auditor.models.device)
and checked against free memory first (auditor.models.memory)."""

from __future__ import annotations

from auditor.models.base import GENERATE, LOGPROB, OPTION_PROBS, WEIGHTS, Model, Sampling, TokenScores
from auditor.models.device import Placement
from auditor.models.loading import load_model, preflight
from auditor.models.refs import ModelRef, parse_ref

__all__ = ["GENERATE", "LOGPROB", "OPTION_PROBS", "WEIGHTS", "Model", "ModelRef", "Placement", "Sampling", "TokenScores", "load_model",
           "parse_ref", "preflight"]
