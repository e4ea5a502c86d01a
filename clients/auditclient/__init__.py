"""Python client of the auditsvc gRPC API.

Guarantees: the names in ``__all__`` are the supported public API (pinned by a test);
everything in underscore modules may change without notice. The package needs only
grpcio, protobuf and googleapis-common-protos at run time.
"""

from ._scores import verdict_age
from ._watch import StreamEvent
from .client import AuditClient
from .errors import (
    AuditError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NoLeader,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
)
from .options import ClientOptions
from .sync import BlockingAuditClient

__version__ = "0.1.0"

__all__ = [
    "AuditClient",
    "AuditError",
    "BlockingAuditClient",
    "ClientOptions",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NoLeader",
    "NotFound",
    "ResourceExhausted",
    "StreamEvent",
    "Unauthenticated",
    "Unavailable",
    "__version__",
    "from_rpc_error",
    "verdict_age",
]
