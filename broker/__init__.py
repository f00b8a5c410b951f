"""jobcast's broker package; the public names for applications are re-exported here."""

from broker.client import AsyncClient, Client
from broker.errors import JobCancelled, JobFailed

__all__ = ["AsyncClient", "Client", "JobCancelled", "JobFailed"]
