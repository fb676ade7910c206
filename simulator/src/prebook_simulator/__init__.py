"""An AimHarder booking API simulator that records each request's kernel arrival time.

``SimulatorServer`` runs it inside an asyncio program and ``serve`` runs it in the
foreground until SIGINT or SIGTERM.
"""

from prebook_simulator.app import Simulator
from prebook_simulator.runner import serve
from prebook_simulator.server import SimulatorServer

__all__ = ["Simulator", "SimulatorServer", "serve"]
