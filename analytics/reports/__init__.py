"""The plant manager's reports: a shift's or day's figures, as a PDF and as JSON, and their mailing."""

from analytics.reports.figures import Period, ReportData, collect, day_period, last_finished_shift, shift_period
from analytics.reports.figures_json import as_dict
from analytics.reports.mail import ReportMailConfig, Smtp, load_report_config, mail_shift_reports, send_mail
from analytics.reports.pdf import SECTIONS, write_pdf

__all__ = [
    "SECTIONS",
    "Period",
    "ReportData",
    "ReportMailConfig",
    "Smtp",
    "as_dict",
    "collect",
    "day_period",
    "last_finished_shift",
    "load_report_config",
    "mail_shift_reports",
    "send_mail",
    "shift_period",
    "write_pdf",
]
