"""``factory demo``: every part of the platform on one machine, with the simulated sugar mill and a seeded ERP."""

from factory_demo.demo import DemoSummary, run_demo
from factory_demo.plant import DemoTiming

__all__ = ["DemoSummary", "DemoTiming", "run_demo"]
