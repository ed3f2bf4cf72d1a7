"""The lab console: membraind in a web browser, for people who do not code.

Served by ``membraind serve`` (``[service.web]``). Layers, each depending only on those
above it:

- :mod:`.settings` (``[service.web]``) and :mod:`.access` (the token, the URL, who may
  ask what): no web framework;
- :mod:`.pages` (what each page shows, read from the daemon's journal, models folder
  and tile stores), :mod:`.forms` (job forms built from the job spec models),
  :mod:`.charts` and :mod:`.pictures` (SVG curves and PNG sections): no web framework;
- :mod:`.live` (the daemon's job events fanned out to browsers) and :mod:`.app` (the
  Starlette routes and templates), :mod:`.server` (uvicorn in a thread of the daemon).

Nothing here runs jobs or validates specs on its own: submissions go through
:func:`membraind.service.job.job_from_request` and the daemon's submit, as request files
and the ZeroMQ API do.
"""
