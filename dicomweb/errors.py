"""One error type for every refusal, so the app answers each with its status and a reason."""

from __future__ import annotations

ERROR_COMMENT = "00000902"  # Error Comment (LO): the reason, in the DICOM JSON error body


class DicomWebError(Exception):
    """A request the service refuses: ``status`` is the HTTP status, ``message`` says why and
    names the offending parameter or media type (never a value read from a file)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> list[dict]:
        """A DICOM JSON dataset carrying the reason as Error Comment, so DICOMweb clients that
        parse every answer as DICOM JSON still read it."""
        return [{ERROR_COMMENT: {"vr": "LO", "Value": [self.message[:1024]]}}]


def bad_request(message: str) -> DicomWebError:
    return DicomWebError(400, message)


def not_found(what: str) -> DicomWebError:
    """Unknown and not visible answer alike, so a token never learns that a study exists."""
    return DicomWebError(404, f"{what} not found")


def not_acceptable(message: str) -> DicomWebError:
    return DicomWebError(406, message)
