"""Personas: base takes of a portrait per angle and emotion (CPU reframing engine)."""
from personas.takes import ANGLES, ENGINE, GRADES, TakeInfo, render_take

__all__ = ["ANGLES", "ENGINE", "GRADES", "TakeInfo", "render_take"]
