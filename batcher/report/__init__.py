"""What a command did, told to people (tables on stderr) and to files (report, rejects)."""

from batcher.report.files import (
    REPORT_FORMATS,
    excel_safe_expr,
    sibling,
    write_rejects,
    write_report,
)
from batcher.report.render import (
    format_duration,
    render_plan,
    render_status,
    render_summary,
    render_verify,
    say,
)

__all__ = [
    "REPORT_FORMATS",
    "excel_safe_expr",
    "format_duration",
    "render_plan",
    "render_status",
    "render_summary",
    "render_verify",
    "say",
    "sibling",
    "write_rejects",
    "write_report",
]
