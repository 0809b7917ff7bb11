"""Personas: base takes of a portrait per angle and emotion (takes.py: the embedded CPU reframer;
liveportrait/: the LivePortrait-compatible engine) and where they are kept (manifest.py).

Import-free on purpose: the ingress reads manifests without pulling in torch."""
