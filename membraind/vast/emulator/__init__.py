"""A stand-in for VAST's remote-API server, for tests and for trying membraind without VAST.

Three parts, one module each:

- :mod:`~membraind.vast.emulator.server`: :class:`VastEmulator`, the TCP server (framing,
  connections, injected faults for client tests);
- :mod:`~membraind.vast.emulator.commands`: :class:`EmulatedVast`, the layers, selections
  and view the emulated VAST holds and one handler per remote-API command, with the
  emulation choices where VAST's behaviour is not documented and the error codes;
- :mod:`~membraind.vast.emulator.sparse_labels`: :class:`SparseLabels`, the in-memory
  segmentation layer.
"""

from membraind.vast.emulator.commands import API_VERSION, MAX_REPLY, EmulatedVast
from membraind.vast.emulator.server import FAULTS, REQUEST_LIMIT, VastEmulator
from membraind.vast.emulator.sparse_labels import SparseLabels

__all__ = ["VastEmulator", "EmulatedVast", "SparseLabels", "FAULTS", "MAX_REPLY", "REQUEST_LIMIT", "API_VERSION"]
