"""The engine: a spawned process that runs jobs and keeps models loaded between them.

:mod:`~membraind.service.engine.process` is the daemon's side (:class:`EngineProcess`),
:mod:`~membraind.service.engine.child` the process's own main loop, and
:mod:`~membraind.service.engine.messages` the typed messages the two exchange.
"""
