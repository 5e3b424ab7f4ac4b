"""Detectors: one module each, all on the base class in detectors.base, found through detectors.registry."""

from detectors.base import AuditContext, Detector, DetectorResult, Skip, TraitEvidence
from detectors.registry import DETECTORS

__all__ = ["AuditContext", "Detector", "DetectorResult", "Skip", "TraitEvidence", "DETECTORS"]
