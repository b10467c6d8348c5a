"""batcher: act on many Microsoft Entra users at once through Microsoft Graph (confirm them
compromised, disable them, revoke their sessions...), paced, resumable and audited in a ledger.

Its layers are declared as import contracts in pyproject.toml ([tool.importlinter]).
"""

__version__ = "0.1.0"
