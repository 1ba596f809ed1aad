"""Energy per inference from USB power meters read over serial (edge-power).

Built-in meters register themselves when their module is imported below; a new meter is one
file plus one import line here. The device-side needs only the stdlib, numpy, pyserial and click.
"""

from .meter import METERS, MeterDriver, Sample, create_meter, meter_names, register_meter
from . import line_protocol, rdtech_um  # noqa: F401  (register the built-in meters)

__all__ = ["METERS", "MeterDriver", "Sample", "create_meter", "meter_names", "register_meter"]
