"""gitd: a self-hosted git-push PaaS."""

__version__ = "0.1.0"
