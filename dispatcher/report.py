"""Old home of the results ⋈ delivery-reports join; kept so that code written against
``dispatcher.report`` keeps working. New code imports `dispatcher.delivery`:
``Report`` is `dispatcher.delivery.DeliveryCounts`, ``build_report`` is
`dispatcher.delivery.join_delivery_reports`."""

from dispatcher.delivery import DeliveryCounts as Report
from dispatcher.delivery import join_delivery_reports as build_report

__all__ = ["Report", "build_report"]
