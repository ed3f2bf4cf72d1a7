"""membraind-client: submit and follow membraind jobs over ZeroMQ (see docs/protocol.md)."""

from membraind_client.client import Client, ClientError, DaemonUnreachable, RequestRejected
from membraind_client.messages import PROTOCOL_VERSION, JobInfo, JobResult
from membraind_client.progress import Progress

__all__ = [
    "Client", "ClientError", "DaemonUnreachable", "RequestRejected", "JobInfo", "JobResult", "Progress", "PROTOCOL_VERSION",
]  # fmt: skip
__version__ = "0.1.0"
