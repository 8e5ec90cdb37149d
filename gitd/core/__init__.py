"""The core: errors, log, settings, the state store, validation, certificates and
resource limits. It imports nothing else of gitd, hooks or buildpacks."""
