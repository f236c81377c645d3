"""Chroma's error classes: `chromadb.errors` itself when chromadb is installed (so
`except chromadb.errors.NotFoundError` catches Indigo's errors), otherwise
equivalents with the same names, codes and wire names."""
from typing import Dict, Optional, Type

try:
    from chromadb.errors import (  # noqa: F401
        AuthorizationError,
        BatchSizeExceededError,
        ChromaAuthError,
        ChromaError,
        DuplicateIDError,
        IDAlreadyExistsError,
        InternalError,
        InvalidArgumentError,
        InvalidDimensionException,
        InvalidHTTPVersion,
        InvalidUUIDError,
        NotFoundError,
        QuotaError,
        RateLimitError,
        UniqueConstraintError,
        VersionMismatchError,
        error_types,
    )
except Exception:  # no chromadb, or one that fails to import

    class ChromaError(Exception):
        """An error Indigo answered with Chroma's error JSON."""

        trace_id: Optional[str] = None

        def code(self) -> int:
            return 400

        def message(self) -> str:
            return ", ".join(str(a) for a in self.args)

        @classmethod
        def name(cls) -> str:
            return "ChromaError"

    def _error(cls_name: str, wire: str, status: int, base=ChromaError):
        return type(
            cls_name,
            (base,),
            {"code": lambda self: status, "name": classmethod(lambda cls: wire)},
        )

    InvalidDimensionException = _error("InvalidDimensionException", "InvalidDimension", 400)
    IDAlreadyExistsError = _error("IDAlreadyExistsError", "IDAlreadyExists", 409)
    ChromaAuthError = _error("ChromaAuthError", "AuthError", 403)
    DuplicateIDError = _error("DuplicateIDError", "DuplicateID", 400)
    InvalidArgumentError = _error("InvalidArgumentError", "InvalidArgument", 400)
    InvalidUUIDError = _error("InvalidUUIDError", "InvalidUUID", 400)
    InvalidHTTPVersion = _error("InvalidHTTPVersion", "InvalidHTTPVersion", 400)
    AuthorizationError = _error("AuthorizationError", "AuthorizationError", 401)
    NotFoundError = _error("NotFoundError", "NotFoundError", 404)
    UniqueConstraintError = _error("UniqueConstraintError", "UniqueConstraintError", 409)
    BatchSizeExceededError = _error("BatchSizeExceededError", "BatchSizeExceededError", 413)
    VersionMismatchError = _error("VersionMismatchError", "VersionMismatchError", 500)
    InternalError = _error("InternalError", "InternalError", 500)
    RateLimitError = _error("RateLimitError", "RateLimitError", 429)
    QuotaError = _error("QuotaError", "QuotaError", 400)

    # Keyed by the wire's `error` field, as chromadb's is (which names
    # InvalidArgumentError in full, unlike its `name()`).
    error_types: Dict[str, Type[ChromaError]] = {"InvalidArgumentError": InvalidArgumentError}
    error_types.update(
        (c.name(), c)
        for c in [
            InvalidDimensionException,
            IDAlreadyExistsError,
            DuplicateIDError,
            InvalidUUIDError,
            InvalidHTTPVersion,
            AuthorizationError,
            NotFoundError,
            BatchSizeExceededError,
            VersionMismatchError,
            RateLimitError,
            ChromaAuthError,
            UniqueConstraintError,
            QuotaError,
            InternalError,
            ChromaError,
        ]
    )
