"""Persona vectors on a local base model: activations, the vector per trait, its steering check, row projections.

The persona detector (detectors/persona.py) and `audit vectors` are thin layers over this package.
"""

from auditor.persona.scoring import base_answers, projections
from auditor.persona.steering import steering_check, trait_probabilities
from auditor.persona.vectors import METHOD_VERSION, PersonaVector, base_identity, persona_vector, save_checks

__all__ = ["METHOD_VERSION", "PersonaVector", "base_answers", "base_identity", "persona_vector", "projections",
           "save_checks", "steering_check", "trait_probabilities"]
