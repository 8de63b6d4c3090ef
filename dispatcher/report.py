"""Old home of the results ⋈ delivery-reports join; kept so that code written against
``dispatcher.report`` keeps working. New code imports `dispatcher.delivery`."""

from dispatcher.delivery import Report, build_report

__all__ = ["Report", "build_report"]
