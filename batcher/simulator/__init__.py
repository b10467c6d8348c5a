"""A local stand-in for Microsoft Graph and Entra ID sign-in, for tests and safe rehearsals."""

from batcher.simulator.app import GraphSimulator
from batcher.simulator.batch import MAX_REQUESTS_PER_BATCH
from batcher.simulator.directory import DirectoryUser
from batcher.simulator.record import Record, Write
from batcher.simulator.risky import MAX_IDS_PER_CALL
from batcher.simulator.server import RunningSimulator
from batcher.simulator.signin import SIMULATED_TENANT

__all__ = [
    "MAX_IDS_PER_CALL",
    "MAX_REQUESTS_PER_BATCH",
    "SIMULATED_TENANT",
    "DirectoryUser",
    "GraphSimulator",
    "Record",
    "RunningSimulator",
    "Write",
]
