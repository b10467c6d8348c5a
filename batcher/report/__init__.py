"""What a command did, written to files: the report, the rejects, the verify table."""

from batcher.report.files import (
    REPORT_FORMATS,
    excel_safe_expr,
    sibling,
    write_rejects,
    write_report,
)

__all__ = [
    "REPORT_FORMATS",
    "excel_safe_expr",
    "sibling",
    "write_rejects",
    "write_report",
]
