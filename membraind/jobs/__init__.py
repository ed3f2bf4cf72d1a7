"""Jobs: what can be asked of membraind (specs) and how each kind is carried out (execute).

The command line, request files, the scope watcher, VAST anchors and the ZeroMQ API all
describe work with the same :mod:`membraind.jobs.specs` models.
"""
