"""`bsm report`: plots and tables of a run, a sweep or an export, as one self-contained HTML page plus PNGs."""

from raytune_bsm.report.build import build_report

__all__ = ["build_report"]
