"""batcher: confirm Microsoft Entra users compromised in paced, resumable batches."""

__version__ = "0.1.0"
