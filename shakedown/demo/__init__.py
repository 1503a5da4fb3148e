"""`shakedown demo`: the whole story in one run (see `shakedown.demo.run`).

Modules: `run` (the configs, the order of the parts, the combined report), `part` (what a part
hands back), one module per part: `drive` (the car's twin, agent and shield), `line` (the
factory line), `scenarios` (a rare event: search, estimate, shrink, keep), `robot` (the bridge,
calibration, the rollout ladder and a link fault), `audit` (verify, witness, index).
"""

from shakedown.demo.drive import SHIPPED_ADAPTER
from shakedown.demo.run import DemoConfig, FactoryDemoConfig, run_demo, run_factory_demo

__all__ = ["SHIPPED_ADAPTER", "DemoConfig", "FactoryDemoConfig", "run_demo", "run_factory_demo"]
