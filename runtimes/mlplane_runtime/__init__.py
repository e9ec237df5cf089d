"""mlplane runtimes: the code that runs inside mlplane pods (never imports the operator)."""

__version__ = "0.1.0"
